// Command worker answers queued questions: it takes them from the QUERIES
// work queue, retrieves passages, generates an answer, stores it under the
// query id and publishes the real token usage.
//
// Usage:
//
//	worker               process questions (configured by environment variables)
//	worker ingest PATH   load a Markdown/text file or folder into the index
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
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}
