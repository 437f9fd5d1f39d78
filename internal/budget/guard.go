package budget

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/pricing"
	"github.com/gravitycar/tollgate/internal/queue"
)

// Guard admits queries against the daily budget. It follows the day
// documents through a KV watch, so checking costs no round trip, and
// reserves with compare-and-swap on the day document itself, the same
// document the ledger settles into, so spend + reserved is exact across
// any number of api replicas.
type Guard struct {
	kv     jetstream.KeyValue
	budget pricing.Nanos
	now    func() time.Time
	logger *slog.Logger

	mu    sync.RWMutex
	days  map[string]seen // latest day documents from the watch
	ready chan struct{}
}

type seen struct {
	doc Day
	rev uint64
}

// NewGuard returns a guard for a daily budget. Run must be running for it
// to see the ledger.
func NewGuard(kv jetstream.KeyValue, budget pricing.Nanos, logger *slog.Logger, now func() time.Time) *Guard {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Guard{kv: kv, budget: budget, now: now, logger: logger, days: map[string]seen{}, ready: make(chan struct{})}
}

// Budget is the daily budget.
func (g *Guard) Budget() pricing.Nanos { return g.budget }

// Ready is closed once the watch has delivered the current ledger.
func (g *Guard) Ready() <-chan struct{} { return g.ready }

// Run follows the day documents until ctx ends, re-watching after errors.
func (g *Guard) Run(ctx context.Context) error {
	var once sync.Once
	return queue.KeepWatching(ctx, g.logger, "budget", func(ctx context.Context) error {
		return g.watch(ctx, func() { once.Do(func() { close(g.ready) }) })
	})
}

func (g *Guard) watch(ctx context.Context, loaded func()) error {
	w, err := g.kv.Watch(ctx, "day.*")
	if err != nil {
		return fmt.Errorf("watching budget: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher closed")
			}
			if e == nil {
				loaded()
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var d Day
			if err := json.Unmarshal(e.Value(), &d); err != nil {
				g.logger.Error("undecodable day ledger", "key", e.Key(), "err", err)
				continue
			}
			g.remember(strings.TrimPrefix(e.Key(), "day."), d, e.Revision())
		}
	}
}

// remember keeps a day document unless a newer revision is already known.
func (g *Guard) remember(day string, d Day, rev uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cur, ok := g.days[day]; ok && cur.rev >= rev {
		return
	}
	g.days[day] = seen{doc: d, rev: rev}
	// Keep only the last few days.
	for k := range g.days {
		if k < Today(g.now().AddDate(0, 0, -2)) {
			delete(g.days, k)
		}
	}
}

// cached returns the watched day document; its Holds are a copy the
// caller may change.
func (g *Guard) cached(day string) (Day, uint64, bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	s, ok := g.days[day]
	s.doc.Holds = maps.Clone(s.doc.Holds)
	return s.doc, s.rev, ok
}

// Status is the day's budget as the guard last saw it.
type Status struct {
	Day       string
	Budget    pricing.Nanos
	Spent     pricing.Nanos
	Reserved  pricing.Nanos
	Exhausted bool // admission has been refused for budget today
}

// Today returns today's budget as last seen, without a round trip.
func (g *Guard) Today() Status {
	now := g.now()
	day := Today(now)
	d, _, _ := g.cached(day)
	return Status{Day: day, Budget: g.budget, Spent: d.Spent, Reserved: d.Reserved(now), Exhausted: d.ExhaustedAt != nil}
}

// Reserve holds amount of today's budget for the query id until ttl has
// passed or the query's usage is settled. It returns ErrExhausted when
// spent + reserved + amount would pass the budget, and records that
// admission is being refused (the alerter tells the owner).
func (g *Guard) Reserve(ctx context.Context, id string, amount pricing.Nanos, ttl time.Duration) error {
	now := g.now().UTC()
	day := DayOf(id, now)
	key := DayKey(day)
	d, rev, ok := g.cached(day)
	var err error
	if ok && d.Spent+amount > g.budget {
		// Settled spend only grows: refusing on what the watch shows is safe.
		return g.refuse(ctx, day, d)
	}
	fresh := !ok // d was just read, not seen through the watch
	if !ok {
		if d, rev, err = g.get(ctx, key); err != nil {
			return err
		}
	}
	for {
		now = g.now().UTC()
		if d.Spent+d.Reserved(now)+amount > g.budget {
			if !fresh {
				// The watch may still show holds that were settled or
				// released a moment ago: refuse only on a fresh read.
				if d, rev, err = g.get(ctx, key); err != nil {
					return err
				}
				fresh = true
				continue
			}
			return g.refuse(ctx, day, d)
		}
		d.Day = day
		d.dropLapsed(now)
		if d.Holds == nil {
			d.Holds = map[string]Hold{}
		}
		d.Holds[id] = Hold{Amount: amount, Expires: now.Add(ttl)}
		d.UpdatedAt = now
		err = g.put(ctx, key, d, rev)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return err
		}
		if d, rev, err = g.get(ctx, key); err != nil {
			return err
		}
		fresh = true
	}
}

// refuse marks the day exhausted, once, and returns ErrExhausted.
func (g *Guard) refuse(ctx context.Context, day string, d Day) error {
	if d.ExhaustedAt == nil {
		now := g.now().UTC()
		err := update(ctx, g.kv, DayKey(day), func(d *Day) bool {
			if d.ExhaustedAt != nil {
				return false
			}
			d.Day, d.ExhaustedAt, d.UpdatedAt = day, &now, now
			return true
		})
		if err != nil {
			g.logger.Warn("recording budget exhaustion", "err", err)
		} else {
			g.logger.Warn("daily budget exhausted: refusing new queries", "day", day)
		}
	}
	return ErrExhausted
}

// Release drops the hold of a query that will not run (refused after the
// reservation, or not queued). Releasing a hold that is gone is a no-op.
func (g *Guard) Release(ctx context.Context, id string) error {
	day := DayOf(id, g.now())
	return update(ctx, g.kv, DayKey(day), func(d *Day) bool {
		if _, ok := d.Holds[id]; !ok {
			return false
		}
		delete(d.Holds, id)
		d.UpdatedAt = g.now().UTC()
		return true
	})
}

// UserSpent is what user has spent today.
func (g *Guard) UserSpent(ctx context.Context, user string) (pricing.Nanos, error) {
	u, _, err := getJSON[UserDay](ctx, g.kv, UserKey(Today(g.now()), user))
	return u.Spent, err
}

func (g *Guard) get(ctx context.Context, key string) (Day, uint64, error) {
	return getJSON[Day](ctx, g.kv, key)
}

func (g *Guard) put(ctx context.Context, key string, d Day, rev uint64) error {
	b, err := json.Marshal(&d)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key, err)
	}
	if rev == 0 {
		_, err = g.kv.Create(ctx, key, b)
	} else {
		_, err = g.kv.Update(ctx, key, b, rev)
	}
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("reserving in %s: %w", key, err)
	}
	return err
}
