package alert_test

import (
	"fmt"
	"time"

	"github.com/gravitycar/tollgate/internal/alert"
	"github.com/gravitycar/tollgate/internal/pricing"
)

func ExampleRender() {
	n := alert.Notice{
		Day:       "2026-12-03",
		Threshold: 0.8,
		Spent:     800_000_000, // $0.80
		Budget:    pricing.NanosPerUSD,
		TopUsers:  []alert.Line{{Name: "auth0|alice", Spent: 800_000_000, Requests: 20}},
		TopModels: []alert.Line{{Name: "gpt-4o-mini", Spent: 800_000_000, Requests: 20}},
		CrossedAt: time.Date(2026, 12, 3, 14, 5, 9, 0, time.UTC),
	}
	fmt.Println(alert.Key(n.Day, n.Threshold))
	msg, err := alert.Render(n, "tollgate@example.com", "owner@example.com")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(msg.Subject)
	fmt.Println(msg.MessageID)
	fmt.Print(msg.Text)
	// Output:
	// 2026-12-03.t0800
	// Tollgate: 80% of the daily budget used on 2026-12-03
	// tollgate-alert.2026-12-03.t0800@example.com
	// Tollgate budget alert for 2026-12-03 (UTC)
	//
	// The day's spend has crossed 80% of the daily budget.
	//
	// Spent:       $0.80 (80% of the budget)
	// Reserved:    $0.00 (queries in flight, not yet settled)
	// Budget:      $1.00
	// Threshold:   80%
	// Crossed at:  2026-12-03 14:05:09 UTC
	//
	// Top users:
	//   auth0|alice  $0.80  20 requests
	//
	// Top models:
	//   gpt-4o-mini  $0.80  20 requests
}
