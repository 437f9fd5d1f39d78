package query_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/natstest"
	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
)

func newStore(t *testing.T) *query.Store {
	t.Helper()
	js, err := jetstream.New(natstest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	kvs, err := queue.EnsureBuckets(ctx, js, queue.Layout{}, queue.QueriesBucket)
	if err != nil {
		t.Fatal(err)
	}
	return query.NewStore(kvs[queue.QueriesBucket])
}

func TestStoreCreateGetUpdate(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	now := time.Now().UTC()
	id := query.NewID(now)
	rec := query.Record{ID: id, User: "alice", Status: query.Queued, Question: "q?", K: 5, CreatedAt: now}
	if err := s.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, rec); err == nil {
		t.Fatal("second Create with the same id succeeded")
	}
	got, _, err := s.Get(ctx, id)
	if err != nil || got.User != "alice" || got.Status != query.Queued {
		t.Fatalf("Get = %+v, %v", got, err)
	}

	// Concurrent updates all land: compare-and-swap retries on conflict.
	const n = 20
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := s.Update(ctx, id, func(r *query.Record) error { r.K++; return nil }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, _, _ = s.Get(ctx, id)
	if got.K != 5+n {
		t.Fatalf("K = %d after %d concurrent increments, want %d", got.K, n, 5+n)
	}

	// A change that refuses writes nothing.
	errNo := errors.New("no")
	if _, err := s.Update(ctx, id, func(r *query.Record) error { r.K = 0; return errNo }); !errors.Is(err, errNo) {
		t.Fatalf("Update error = %v", err)
	}
	if got, _, _ = s.Get(ctx, id); got.K != 5+n {
		t.Fatal("a refused change was written")
	}
}

func TestStoreNotFound(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	for _, id := range []string{query.NewID(time.Now()), "", "../x", "01ARZ3NDEKTSV4RRFFQ69G5FA*", "a.b.c"} {
		if _, _, err := s.Get(context.Background(), id); !errors.Is(err, query.ErrNotFound) {
			t.Errorf("Get(%q) error = %v, want ErrNotFound", id, err)
		}
	}
}

func TestPublicHidesOwner(t *testing.T) {
	t.Parallel()
	r := query.Record{ID: "x", User: "alice"}
	if r.Public().User != "" {
		t.Fatal("Public() shows the owner")
	}
}
