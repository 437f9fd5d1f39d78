package ratelimit

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gravitycar/tollgate/internal/natstest"
)

// TestLimiterConcurrentReplicas releases 100 requests of one user at once
// on two Limiters with connections of their own to one server, as two api
// replicas would: exactly the limit must be allowed.
func TestLimiterConcurrentReplicas(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		policy Policy
		limit  Limit
		want   int
	}{
		{"burst", Policy{Capacity: 15, RefillPerSecond: 0.016667, DailyLimit: 30}, Burst, 15},
		{"daily", Policy{Capacity: 15, RefillPerSecond: 0.016667, DailyLimit: 3}, Daily, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := natstest.StartServer(t)
			clock := newFakeClock(time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC))
			replicas := []*Limiter{
				newLimiter(t, connect(t, s), tt.policy, clock.Now),
				newLimiter(t, connect(t, s), tt.policy, clock.Now),
			}
			const user, requests = "auth0|concurrent", 100

			start := make(chan struct{})
			decisions := make(chan Decision, requests)
			errs := make(chan error, requests)
			var wg sync.WaitGroup
			for i := range requests {
				wg.Go(func() {
					<-start
					d, err := replicas[i%len(replicas)].Take(context.Background(), user)
					if err != nil {
						errs <- err
						return
					}
					decisions <- d
				})
			}
			close(start)
			wg.Wait()
			close(decisions)
			close(errs)
			for err := range errs {
				t.Errorf("Take: %v", err)
			}
			allowed, refused := 0, 0
			for d := range decisions {
				if d.Allowed {
					allowed++
					continue
				}
				refused++
				if d.Limit != tt.limit || d.RetryAfter <= 0 {
					t.Errorf("refused by %q, retry after %v; want %q and a positive wait", d.Limit, d.RetryAfter, tt.limit)
				}
			}
			if allowed != tt.want || refused != requests-tt.want {
				t.Errorf("%d allowed, %d refused; want %d, %d", allowed, refused, tt.want, requests-tt.want)
			}
			st := mustStatus(t, replicas[0], user)
			if st.DailyUsed != tt.want || st.Remaining != 0 {
				t.Errorf("afterwards: %d used, %d remaining; want %d, 0", st.DailyUsed, st.Remaining, tt.want)
			}
			t.Logf("compare-and-swap retries: %d", replicas[0].Retries()+replicas[1].Retries())
		})
	}
}

func TestLimiter(t *testing.T) {
	t.Parallel()
	p := Policy{Capacity: 15, RefillPerSecond: 0.016667, DailyLimit: 30}
	newTest := func(t *testing.T) (*Limiter, *fakeClock) {
		clock := newFakeClock(time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC))
		return newLimiter(t, connect(t, natstest.StartServer(t)), p, clock.Now), clock
	}
	drain := func(t *testing.T, l *Limiter, user string) {
		t.Helper()
		for i := range 15 {
			if d := mustTake(t, l, user, true); d.Remaining != 14-i {
				t.Fatalf("take %d: %d remaining, want %d", i+1, d.Remaining, 14-i)
			}
		}
		mustTake(t, l, user, false)
	}

	t.Run("users do not affect each other", func(t *testing.T) {
		t.Parallel()
		l, _ := newTest(t)
		drain(t, l, "auth0|alice")
		if st := mustStatus(t, l, "auth0|bob"); st.Remaining != 15 || st.DailyUsed != 0 {
			t.Errorf("bob before any request: %+v", st)
		}
		drain(t, l, "auth0|bob")
		if st := mustStatus(t, l, "auth0|alice"); st.DailyUsed != 15 {
			t.Errorf("alice: %d used, want 15", st.DailyUsed)
		}
	})
	t.Run("refund restores a token", func(t *testing.T) {
		t.Parallel()
		l, _ := newTest(t)
		const user = "someone@example.com"
		drain(t, l, user)
		if err := l.Refund(context.Background(), user); err != nil {
			t.Fatalf("Refund: %v", err)
		}
		if st := mustStatus(t, l, user); st.Remaining != 1 || st.DailyUsed != 14 {
			t.Errorf("after refund: %d remaining, %d used; want 1, 14", st.Remaining, st.DailyUsed)
		}
		mustTake(t, l, user, true)
		mustTake(t, l, user, false)
	})
	t.Run("refund of a user never seen writes nothing", func(t *testing.T) {
		t.Parallel()
		l, _ := newTest(t)
		if err := l.Refund(context.Background(), "nobody"); err != nil {
			t.Fatalf("Refund: %v", err)
		}
		if _, err := l.kv.Get(context.Background(), Key("nobody")); err == nil {
			t.Error("Refund created a state for a user without one")
		}
	})
	t.Run("status does not consume", func(t *testing.T) {
		t.Parallel()
		l, _ := newTest(t)
		const user = "Ünïcödé user"
		mustTake(t, l, user, true)
		for range 5 {
			if st := mustStatus(t, l, user); st.Remaining != 14 || st.DailyUsed != 1 {
				t.Fatalf("status: %d remaining, %d used; want 14, 1", st.Remaining, st.DailyUsed)
			}
		}
		for range 14 {
			mustTake(t, l, user, true)
		}
		mustTake(t, l, user, false)
	})
	t.Run("tokens refill with time", func(t *testing.T) {
		t.Parallel()
		l, clock := newTest(t)
		const user = "auth0|refill"
		drain(t, l, user)
		clock.Advance(minute - time.Nanosecond)
		d := mustTake(t, l, user, false)
		if d.Limit != Burst || d.RetryAfter != time.Nanosecond {
			t.Errorf("refused by %q for %v, want burst for 1ns", d.Limit, d.RetryAfter)
		}
		clock.Advance(time.Nanosecond)
		mustTake(t, l, user, true)
		mustTake(t, l, user, false)
	})
}

// TestLimiterFailsClosed stops the server under a Limiter: every call must
// fail promptly with ErrUnavailable, and work again, with the state kept,
// once a server is back on the same port and storage.
func TestLimiterFailsClosed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := natstest.StartServerAt(t, dir, -1)
	port := s.Addr().(*net.TCPAddr).Port
	clock := newFakeClock(time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC))
	l := newLimiter(t, connect(t, s), Policy{Capacity: 15, RefillPerSecond: 0.016667, DailyLimit: 30}, clock.Now)
	const user = "auth0|outage"
	mustTake(t, l, user, true)
	mustTake(t, l, user, true)

	s.Shutdown()
	s.WaitForShutdown()

	calls := map[string]func(context.Context) error{
		"Take":   func(ctx context.Context) error { _, err := l.Take(ctx, user); return err },
		"Refund": func(ctx context.Context) error { return l.Refund(ctx, user) },
		"Status": func(ctx context.Context) error { _, err := l.Status(ctx, user); return err },
	}
	for name, call := range calls {
		done := make(chan error, 1)
		go func() { done <- call(context.Background()) }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("%s with the server down: %v, want an error wrapping ErrUnavailable", name, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s with the server down has not returned after 20s", name)
		}
	}

	natstest.StartServerAt(t, dir, port)
	deadline := time.Now().Add(30 * time.Second)
	var st Status
	for {
		var err error
		if st, err = l.Status(context.Background(), user); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Status still failing 30s after the server came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.Remaining != 13 || st.DailyUsed != 2 {
		t.Errorf("after the restart: %d remaining, %d used; want 13, 2", st.Remaining, st.DailyUsed)
	}
	if d := mustTake(t, l, user, true); d.Remaining != 12 {
		t.Errorf("take after the restart: %d remaining, want 12", d.Remaining)
	}
}

// TestLimiterRetriesConflicts makes another replica write between a
// Limiter's read and its write, so that its compare-and-swap fails: it must
// decide again on the new state, and give up with ErrUnavailable after a
// bounded number of rounds.
func TestLimiterRetriesConflicts(t *testing.T) {
	t.Parallel()
	p := Policy{Capacity: 100, RefillPerSecond: 1, DailyLimit: 0}
	tests := []struct {
		name      string
		before    int // requests of the user before the contested one
		conflicts int // rounds in which the other replica writes first
		wantErr   bool
	}{
		{name: "first write", before: 0, conflicts: 1},
		{name: "update", before: 3, conflicts: 1},
		{name: "several", before: 1, conflicts: 5},
		{name: "endless", before: 1, conflicts: maxAttempts, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := natstest.StartServer(t)
			clock := newFakeClock(time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC))
			other := newLimiter(t, connect(t, s), p, clock.Now)
			const user = "auth0|contested"
			for range tt.before {
				mustTake(t, other, user, true)
			}
			// The Limiter reads the clock between reading the state and
			// writing it: the other replica takes a token right then.
			rounds := 0
			l := newLimiter(t, connect(t, s), p, func() time.Time {
				if rounds++; rounds <= tt.conflicts {
					mustTake(t, other, user, true)
				}
				return clock.Now()
			})

			d, err := l.Take(context.Background(), user)
			if tt.wantErr {
				if !errors.Is(err, ErrUnavailable) {
					t.Fatalf("Take after %d conflicts: %v, want ErrUnavailable", tt.conflicts, err)
				}
			} else if err != nil || !d.Allowed {
				t.Fatalf("Take: %+v, %v; want allowed", d, err)
			}
			if got := l.Retries(); got != uint64(tt.conflicts) {
				t.Errorf("Retries() = %d, want %d", got, tt.conflicts)
			}
			want := tt.before + tt.conflicts
			if !tt.wantErr {
				want++
				if d.DailyUsed != want {
					t.Errorf("decision counts %d requests, want %d", d.DailyUsed, want)
				}
			}
			if st := mustStatus(t, other, user); st.DailyUsed != want {
				t.Errorf("stored: %d requests, want %d", st.DailyUsed, want)
			}
		})
	}
}
