// Command alerter keeps the spending ledger and tells the owner about it:
// it folds the USAGE stream into the budget bucket, exactly once, and
// emails ALERT_EMAIL when the day's spend crosses each of ALERT_THRESHOLDS.
//
// Usage:
//
//	alerter                           keep the ledger and send alerts
//	alerter rebuild --day YYYY-MM-DD  recompute a day from USAGE and compare it with the ledger
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "alerter:", err)
		os.Exit(1)
	}
}
