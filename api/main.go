// Command api is Tollgate's front door: it authenticates users, validates
// and meters their questions, queues them on JetStream and serves the
// answers.
//
// Usage:
//
//	api                 serve HTTP (configured by environment variables)
//	api token USER      print a dev-mode token for USER (AUTH_MODE=dev)
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
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}
