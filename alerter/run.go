package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/gravitycar/tollgate/internal/alert"
	"github.com/gravitycar/tollgate/internal/budget"
	"github.com/gravitycar/tollgate/internal/config"
	"github.com/gravitycar/tollgate/internal/logging"
	"github.com/gravitycar/tollgate/internal/ops"
	"github.com/gravitycar/tollgate/internal/pricing"
	"github.com/gravitycar/tollgate/internal/queue"
)

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	getenv, err := config.WithDotEnv(".env", getenv)
	if err != nil {
		return err
	}
	s, err := loadSettings(getenv)
	if err != nil {
		return err
	}
	logger, err := logging.New(stdout, s.LogLevel, s.LogFormat)
	if err != nil {
		return err
	}
	prices, err := pricing.Load(s.PricingFile)
	if err != nil {
		return fmt.Errorf("PRICING_FILE: %w", err)
	}
	conn, err := queue.Connect(ctx, queue.ConnectOptions{
		Name: "tollgate-alerter", URL: s.NATSURL, Creds: s.NATSCreds, DataDir: s.DataDir, Logger: logger,
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	layout := queue.Layout{Replicas: s.Replicas}
	if err := queue.EnsureStreams(ctx, conn.JS, layout, queue.UsageStream); err != nil {
		return err
	}
	kvs, err := queue.EnsureBuckets(ctx, conn.JS, layout, queue.BudgetBucket, queue.AlertsBucket)
	if err != nil {
		return err
	}
	ledger := budget.NewLedger(kvs[queue.BudgetBucket], prices, logger, time.Now)

	if len(args) > 1 {
		switch args[1] {
		case "rebuild":
			return rebuild(ctx, args[2:], conn, ledger, stdout)
		default:
			return fmt.Errorf("unknown command %q (commands: rebuild)", args[1])
		}
	}

	var mailer alert.Mailer
	if s.SMTP.Host == "" {
		fm := alert.NewFileMailer(filepath.Join(s.DataDir, "mail"), logger)
		logger.Info("no SMTP_HOST: alerts go to the log and to a file", "file", fm.Path())
		mailer = fm
	} else {
		sm, err := alert.NewSMTPMailer(s.SMTP)
		if err != nil {
			return fmt.Errorf("SMTP: %w", err)
		}
		mailer = sm
	}
	sender, err := alert.NewSender(kvs[queue.AlertsBucket], mailer, alert.SenderConfig{
		From: s.From, To: s.AlertEmail, Logger: logger,
	})
	if err != nil {
		return err
	}

	reg := ops.NewRegistry()
	applied := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tollgate_alerter_usage_events_total", Help: "Usage events folded into the ledger (replays included).",
	})
	reg.MustRegister(applied)
	th := &thresholds{
		kv: kvs[queue.BudgetBucket], sender: sender, budget: s.DailyBudget, fractions: s.Thresholds,
		now: time.Now, logger: logger,
	}
	logger.Info("alerter started", "budget", s.DailyBudget.String(), "thresholds", s.Thresholds, "alert_email", s.AlertEmail)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return ledger.Follow(gctx, conn.JS, budget.FollowOptions{
			Applied: func(b []budget.Event) { applied.Add(float64(len(b))) },
		})
	})
	g.Go(func() error { return sender.Run(gctx) })
	g.Go(func() error { return th.run(gctx) })
	g.Go(func() error {
		return ops.Serve(gctx, s.MetricsAddr, reg, func() error {
			if !conn.NC.IsConnected() {
				return errors.New("nats is not connected")
			}
			return nil
		}, logger)
	})
	return g.Wait()
}

// rebuild recomputes a day's ledger from USAGE and compares it with the
// ledger in KV: alerter rebuild --day YYYY-MM-DD.
func rebuild(ctx context.Context, args []string, conn *queue.Conn, ledger *budget.Ledger, stdout io.Writer) error {
	fs := flag.NewFlagSet("rebuild", flag.ContinueOnError)
	fs.SetOutput(stdout)
	day := fs.String("day", budget.Today(time.Now()), "UTC day to rebuild, YYYY-MM-DD")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := time.Parse(time.DateOnly, *day); err != nil {
		return fmt.Errorf("--day %q: want YYYY-MM-DD", *day)
	}
	rc, err := ledger.Rebuild(ctx, conn.JS, *day)
	if err != nil {
		return err
	}
	diffs, err := ledger.Diff(ctx, rc)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d usage events in the stream, spent %s over %d requests, %d users, %d models\n",
		*day, rc.Events, rc.Day.Spent, rc.Day.Totals.Requests, len(rc.ByUser), len(rc.Day.ByModel))
	for _, d := range diffs {
		fmt.Fprintln(stdout, "  differs:", d)
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%d differences between the ledger and the stream", len(diffs))
	}
	fmt.Fprintln(stdout, "the ledger matches the stream: 0 differences")
	return nil
}
