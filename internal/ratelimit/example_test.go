package ratelimit_test

import (
	"fmt"
	"time"

	"github.com/gravitycar/tollgate/internal/ratelimit"
)

// A user with a bucket of 3 tokens, one a minute, and 4 requests a day.
func ExamplePolicy_Take() {
	p := ratelimit.Policy{Capacity: 3, RefillPerSecond: 1.0 / 60, DailyLimit: 4}
	now := time.Date(2026, 3, 14, 23, 58, 0, 0, time.UTC)

	var s ratelimit.State // a user never seen before has a full bucket
	var d ratelimit.Decision
	for range 4 {
		s, d = p.Take(s, now)
		fmt.Printf("allowed=%v remaining=%d reset=%v limit=%q retry-after=%v\n",
			d.Allowed, d.Remaining, d.Reset, d.Limit, d.RetryAfter)
	}

	now = now.Add(time.Minute) // one token back, and the last request of the day
	s, d = p.Take(s, now)
	fmt.Printf("23:59 allowed=%v daily used=%d/%d\n", d.Allowed, d.DailyUsed, d.DailyLimit)
	_, d = p.Take(s, now)
	fmt.Printf("23:59 allowed=%v limit=%q retry-after=%v\n", d.Allowed, d.Limit, d.RetryAfter)

	// Output:
	// allowed=true remaining=2 reset=0s limit="" retry-after=0s
	// allowed=true remaining=1 reset=0s limit="" retry-after=0s
	// allowed=true remaining=0 reset=1m0s limit="" retry-after=0s
	// allowed=false remaining=0 reset=1m0s limit="burst" retry-after=1m0s
	// 23:59 allowed=true daily used=4/4
	// 23:59 allowed=false limit="daily" retry-after=1m0s
}
