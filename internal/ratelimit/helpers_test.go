package ratelimit

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/queue"
)

// connect opens a connection of its own to s, as a separate api replica
// would, and returns its "ratelimit" bucket. The connection reconnects
// forever, quickly, and is closed when the test ends.
func connect(t testing.TB, s *server.Server) jetstream.KeyValue {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("connecting to nats-server: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("creating JetStream context: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kvs, err := queue.EnsureBuckets(ctx, js, queue.Layout{}, queue.RateLimitBucket)
	if err != nil {
		t.Fatal(err)
	}
	return kvs[queue.RateLimitBucket]
}

// newLimiter returns a Limiter over kv.
func newLimiter(t testing.TB, kv jetstream.KeyValue, p Policy, now func() time.Time) *Limiter {
	t.Helper()
	l, err := New(kv, p, now)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return l
}

// fakeClock is a clock that moves only when told, safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// mustTake takes for user and fails the test unless the answer is allowed.
func mustTake(t testing.TB, l *Limiter, user string, allowed bool) Decision {
	t.Helper()
	d, err := l.Take(context.Background(), user)
	if err != nil {
		t.Fatalf("Take(%q): %v", user, err)
	}
	if d.Allowed != allowed {
		t.Fatalf("Take(%q): allowed %v, want %v: %+v", user, d.Allowed, allowed, d)
	}
	return d
}

// mustStatus returns user's status and fails the test on an error.
func mustStatus(t testing.TB, l *Limiter, user string) Status {
	t.Helper()
	st, err := l.Status(context.Background(), user)
	if err != nil {
		t.Fatalf("Status(%q): %v", user, err)
	}
	return st
}
