package ratelimit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gravitycar/tollgate/internal/natstest"
)

// BenchmarkPolicyTake measures the pure arithmetic of one decision.
func BenchmarkPolicyTake(b *testing.B) {
	p := Policy{Capacity: 15, RefillPerSecond: 0.016667, DailyLimit: 30}
	now := time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
	var s State
	for b.Loop() {
		// Ten seconds a request: a mix of allowed and refused, and day changes.
		now = now.Add(10 * time.Second)
		s, _ = p.Take(s, now)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

// BenchmarkTakeManyUsers measures decisions for users picked at random from
// a large set, against an embedded nats-server, with the contract's policy.
// Goroutines is the number of requests in flight at once.
func BenchmarkTakeManyUsers(b *testing.B) {
	for _, parallelism := range []int{1, 8} {
		b.Run(fmt.Sprintf("goroutines=%d", parallelism*runtime.GOMAXPROCS(0)), func(b *testing.B) {
			const users = 100_000
			l := newLimiter(b, connect(b, natstest.StartServer(b)),
				Policy{Capacity: 15, RefillPerSecond: 0.016667, DailyLimit: 30}, nil)
			benchTake(b, l, parallelism, func() string { return "auth0|user-" + strconv.Itoa(rand.IntN(users)) })
		})
	}
}

// BenchmarkTakeHotUser measures decisions for one user from every
// goroutine, with a refill so fast that every request is allowed and so
// writes: the worst case for compare-and-swap conflicts.
func BenchmarkTakeHotUser(b *testing.B) {
	for _, parallelism := range []int{1, 8} {
		b.Run(fmt.Sprintf("goroutines=%d", parallelism*runtime.GOMAXPROCS(0)), func(b *testing.B) {
			l := newLimiter(b, connect(b, natstest.StartServer(b)),
				Policy{Capacity: 15, RefillPerSecond: 1e9}, nil)
			refused := benchTake(b, l, parallelism, func() string { return "auth0|hot" })
			if refused > 0 {
				b.Errorf("%d requests refused, want none", refused)
			}
		})
	}
}

// benchTake runs Take in parallel for the users from pick, reports
// decisions/s and CAS retries per decision, and returns the refusals.
func benchTake(b *testing.B, l *Limiter, parallelism int, pick func() string) (refused uint64) {
	var refusals, failures atomic.Uint64
	b.SetParallelism(parallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			d, err := l.Take(ctx, pick())
			switch {
			case err != nil:
				if failures.Add(1) == 1 {
					b.Errorf("Take: %v", err)
				}
			case !d.Allowed:
				refusals.Add(1)
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
	b.ReportMetric(float64(l.Retries())/float64(b.N), "retries/decision")
	if n := failures.Load(); n > 0 {
		b.Errorf("%d of %d Takes failed", n, b.N)
	}
	return refusals.Load()
}
