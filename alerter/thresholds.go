package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/alert"
	"github.com/gravitycar/tollgate/internal/budget"
	"github.com/gravitycar/tollgate/internal/pricing"
	"github.com/gravitycar/tollgate/internal/queue"
)

// recheckEvery is how often days are checked again, so that a claim that
// failed (NATS briefly away) is retried even if the ledger stays still.
const recheckEvery = 10 * time.Second

// thresholds claims an alert when a day's spend crosses a threshold, or
// when admission was refused for budget, which crosses every threshold up
// to 100%: the owner must hear that users are being turned away even if
// settled spend stays just under the budget. The alert.Sender delivers
// what is claimed, once.
type thresholds struct {
	kv        jetstream.KeyValue // the budget bucket
	sender    *alert.Sender
	budget    pricing.Nanos
	fractions []float64
	now       func() time.Time
	logger    *slog.Logger

	claimed map[string]bool       // alert keys claimed (by anyone)
	latest  map[string]budget.Day // last seen ledger of recent days
}

// run follows the day documents until ctx ends.
func (t *thresholds) run(ctx context.Context) error {
	t.claimed, t.latest = map[string]bool{}, map[string]budget.Day{}
	return queue.KeepWatching(ctx, t.logger, "budget", t.watch)
}

func (t *thresholds) watch(ctx context.Context) error {
	w, err := t.kv.Watch(ctx, "day.*")
	if err != nil {
		return err
	}
	defer w.Stop()
	tick := time.NewTicker(recheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			for _, d := range t.latest {
				t.check(ctx, d)
			}
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher closed")
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var d budget.Day
			if err := json.Unmarshal(e.Value(), &d); err != nil {
				t.logger.Error("undecodable day ledger", "key", e.Key(), "err", err)
				continue
			}
			d.Day = strings.TrimPrefix(e.Key(), "day.")
			// Only today and yesterday (events of a query settle after its
			// day ends); older days are history.
			if d.Day < budget.Today(t.now().AddDate(0, 0, -1)) {
				continue
			}
			t.latest[d.Day] = d
			for day := range t.latest {
				if day < budget.Today(t.now().AddDate(0, 0, -1)) {
					delete(t.latest, day)
				}
			}
			t.check(ctx, d)
		}
	}
}

// check claims the alerts a day's ledger has crossed.
func (t *thresholds) check(ctx context.Context, d budget.Day) {
	now := t.now().UTC()
	for _, f := range t.fractions {
		key := alert.Key(d.Day, f)
		if t.claimed[key] {
			continue
		}
		limit := t.limit(f)
		bySpend := d.Spent >= limit
		byRefusal := d.ExhaustedAt != nil && f <= 1.0
		if !bySpend && !byRefusal {
			continue
		}
		n := alert.Notice{
			Day:       d.Day,
			Threshold: f,
			Spent:     d.Spent,
			Reserved:  d.Reserved(now),
			Budget:    t.budget,
			Exhausted: d.ExhaustedAt != nil,
			TopModels: topModels(d),
			TopUsers:  t.topUsers(ctx, d.Day),
			CrossedAt: now,
		}
		if byRefusal && !bySpend && d.ExhaustedAt != nil {
			n.CrossedAt = d.ExhaustedAt.UTC()
		}
		fresh, err := t.sender.Claim(ctx, n)
		if err != nil {
			t.logger.Error("claiming budget alert; will retry", "key", key, "err", err)
			continue
		}
		t.claimed[key] = true
		if fresh {
			t.logger.Warn("budget threshold crossed: alert claimed", "day", d.Day, "threshold", f,
				"spent", d.Spent.String(), "budget", t.budget.String(), "refusing", d.ExhaustedAt != nil)
		}
	}
}

// limit is the spend at which fraction f of the budget is reached, in
// exact integer arithmetic (0.8 is 800 thousandths).
func (t *thresholds) limit(f float64) pricing.Nanos {
	permille := int64(math.Round(f * 1000))
	return pricing.Nanos((int64(t.budget)*permille + 999) / 1000)
}

const topN = 5

func topModels(d budget.Day) []alert.Line {
	var out []alert.Line
	for _, m := range d.Models() {
		if len(out) == topN {
			break
		}
		out = append(out, alert.Line{Name: m.Model, Spent: m.Spent, Requests: m.Requests})
	}
	return out
}

func (t *thresholds) topUsers(ctx context.Context, day string) []alert.Line {
	users, err := budget.Users(ctx, t.kv, day)
	if err != nil {
		t.logger.Warn("listing top users for an alert", "err", err)
		return nil
	}
	var out []alert.Line
	for _, u := range users {
		if len(out) == topN {
			break
		}
		out = append(out, alert.Line{Name: u.User, Spent: u.Spent, Requests: u.Requests})
	}
	return out
}
