package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/natstest"
	"github.com/gravitycar/tollgate/internal/queue"
)

func TestEmbeddedServerKeepsDataAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	open := func() *queue.Conn {
		c, err := queue.Connect(ctx, queue.ConnectOptions{Name: "test", DataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := open()
	kvs, err := queue.EnsureBuckets(ctx, c.JS, queue.Layout{}, queue.QueriesBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kvs[queue.QueriesBucket].Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if c.EmbeddedURL() != "" {
		t.Errorf("in-process server reports a URL %q", c.EmbeddedURL())
	}
	c.Close()

	c = open()
	defer c.Close()
	kv, err := c.JS.KeyValue(ctx, queue.QueriesBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "k")
	if err != nil || string(e.Value()) != "v" {
		t.Fatalf("after restart: %v, %v", e, err)
	}
}

func TestEmbeddedServerListens(t *testing.T) {
	c, err := queue.Connect(t.Context(), queue.ConnectOptions{DataDir: t.TempDir(), ListenAddr: "127.0.0.1:-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	other, err := queue.Connect(t.Context(), queue.ConnectOptions{URL: c.EmbeddedURL()})
	if err != nil {
		t.Fatalf("connecting to the embedded server at %q: %v", c.EmbeddedURL(), err)
	}
	other.Close()
}

func TestEnsureIsIdempotentAndMatchesTheContract(t *testing.T) {
	t.Parallel()
	js, err := jetstream.New(natstest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	l := queue.Layout{QueryTTL: time.Hour}
	for range 2 {
		if err := queue.EnsureStreams(ctx, js, l, queue.QueriesStream, queue.UsageStream); err != nil {
			t.Fatal(err)
		}
		if _, err := queue.EnsureBuckets(ctx, js, l, queue.QueriesBucket, queue.RateLimitBucket, queue.BudgetBucket, queue.AlertsBucket, queue.ChunksBucket); err != nil {
			t.Fatal(err)
		}
	}
	q, _ := js.Stream(ctx, queue.QueriesStream)
	qi, _ := q.Info(ctx)
	if qi.Config.Retention != jetstream.WorkQueuePolicy || qi.Config.Storage != jetstream.FileStorage || qi.Config.Subjects[0] != "tollgate.queries.submitted" {
		t.Errorf("QUERIES config %+v", qi.Config)
	}
	u, _ := js.Stream(ctx, queue.UsageStream)
	ui, _ := u.Info(ctx)
	if ui.Config.Retention != jetstream.LimitsPolicy || ui.Config.MaxAge != 35*24*time.Hour || ui.Config.Subjects[0] != "tollgate.usage.completed" {
		t.Errorf("USAGE config %+v", ui.Config)
	}
	for name, ttl := range map[string]time.Duration{queue.QueriesBucket: time.Hour, queue.RateLimitBucket: 48 * time.Hour} {
		kv, _ := js.KeyValue(ctx, name)
		st, err := kv.Status(ctx)
		if err != nil || st.TTL() != ttl {
			t.Errorf("bucket %s TTL %v (%v), want %v", name, st.TTL(), err, ttl)
		}
	}
	if err := queue.EnsureStreams(ctx, js, l, "NOPE"); err == nil {
		t.Error("unknown stream accepted")
	}
}

func TestConnectGivesUpWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := queue.Connect(ctx, queue.ConnectOptions{URL: "nats://127.0.0.1:1"}); err == nil {
		t.Fatal("connected to nothing")
	}
}
