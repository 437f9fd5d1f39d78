package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/alert"
	"github.com/gravitycar/tollgate/internal/budget"
	"github.com/gravitycar/tollgate/internal/natstest"
	"github.com/gravitycar/tollgate/internal/pricing"
	"github.com/gravitycar/tollgate/internal/queue"
)

func TestThresholdsClaimAlertsAsSpendCrosses(t *testing.T) {
	js, err := jetstream.New(natstest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	kvs, err := queue.EnsureBuckets(t.Context(), js, queue.Layout{}, queue.BudgetBucket, queue.AlertsBucket)
	if err != nil {
		t.Fatal(err)
	}
	sender, err := alert.NewSender(kvs[queue.AlertsBucket], alert.NewFileMailer(t.TempDir(), nil), alert.SenderConfig{From: "t@localhost", To: "owner@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	th := &thresholds{kv: kvs[queue.BudgetBucket], sender: sender, budget: pricing.NanosPerUSD,
		fractions: []float64{0.8, 1.0}, now: func() time.Time { return now }, logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); th.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	day := budget.Today(now)
	write := func(d budget.Day) {
		b, _ := json.Marshal(d)
		if _, err := kvs[queue.BudgetBucket].Put(t.Context(), budget.DayKey(day), b); err != nil {
			t.Fatal(err)
		}
	}
	claimed := func(f float64) bool {
		_, err := kvs[queue.AlertsBucket].Get(t.Context(), alert.Key(day, f))
		return err == nil
	}
	waitFor := func(cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatal("condition not met within 30s")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	write(budget.Day{Day: day, Spent: 799_999_999, AppliedSeq: 1}) // just under 80%
	write(budget.Day{Day: day, Spent: 800_000_000, AppliedSeq: 2,  // exactly 80%
		ByModel: map[string]*budget.Tally{"gpt-4o-mini": {Spent: 800_000_000, Requests: 3}}})
	waitFor(func() bool { return claimed(0.8) })
	if claimed(1.0) {
		t.Fatal("100% claimed at 80% spend")
	}
	// Refusals for budget cross 100% even though settled spend is under it.
	exhausted := now
	write(budget.Day{Day: day, Spent: 900_000_000, AppliedSeq: 3, ExhaustedAt: &exhausted})
	waitFor(func() bool { return claimed(1.0) })

	states, err := sender.List(t.Context(), day)
	if err != nil || len(states) != 2 {
		t.Fatalf("alerts %+v, %v", states, err)
	}
	for _, st := range states {
		if st.Threshold == 0.8 && (st.Notice.Spent != 800_000_000 || len(st.Notice.TopModels) != 1) {
			t.Fatalf("80%% notice %+v", st.Notice)
		}
		if st.Threshold == 1.0 && (!st.Notice.Exhausted || !st.Notice.CrossedAt.Equal(exhausted)) {
			t.Fatalf("100%% notice %+v", st.Notice)
		}
	}
}

func TestLimitIsExact(t *testing.T) {
	th := &thresholds{budget: 1_000_000_001}
	if got := th.limit(0.8); got != 800_000_001 { // rounded up: never alert early
		t.Fatalf("limit(0.8) = %d", got)
	}
	if got := th.limit(1.0); got != 1_000_000_001 {
		t.Fatalf("limit(1.0) = %d", got)
	}
}

func TestSettings(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	s, err := loadSettings(env(map[string]string{"ALERT_THRESHOLDS": "1.0, 0.5", "DAILY_BUDGET_USD": "2.50"}))
	if err != nil || s.DailyBudget != 2_500_000_000 || len(s.Thresholds) != 2 || s.Thresholds[0] != 0.5 {
		t.Fatalf("settings %+v, %v", s, err)
	}
	for name, bad := range map[string]string{"ALERT_THRESHOLDS": "0.8,lots", "DAILY_BUDGET_USD": "-1", "ALERT_EMAIL": "not an address", "SMTP_TLS": "maybe"} {
		if _, err := loadSettings(env(map[string]string{name: bad})); err == nil {
			t.Errorf("%s=%q accepted", name, bad)
		}
	}
}
