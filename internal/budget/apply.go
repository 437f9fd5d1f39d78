package budget

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/gravitycar/tollgate/internal/pricing"
	"github.com/gravitycar/tollgate/internal/queue"
)

// appliedTTL is how long the ledger remembers which stream sequence carried
// a request id: longer than USAGE keeps events (35 days), so a duplicate
// publish of any event the stream still holds is recognised.
const appliedTTL = 36 * 24 * time.Hour

// Event is a usage event with its USAGE stream sequence.
type Event struct {
	Seq   uint64
	Usage queue.UsageEvent
}

// Ledger folds usage events into the budget bucket, exactly once.
//
// Exactly once rests on two facts. Events are applied in stream order,
// and every document records the highest sequence folded into it, so a
// replay (a crash between two writes, a restart from an older cursor, a
// second alerter folding the same events) skips what a document already
// holds. And each request id is bound to the first sequence that carried
// it ("applied.<id>", created once), so a duplicate publish that slipped
// past the stream's duplicate window is recognised and skipped.
type Ledger struct {
	kv     jetstream.KeyValue
	prices *pricing.Table
	logger *slog.Logger
	now    func() time.Time
}

// NewLedger returns a ledger over the budget bucket, pricing events with
// prices.
func NewLedger(kv jetstream.KeyValue, prices *pricing.Table, logger *slog.Logger, now func() time.Time) *Ledger {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Ledger{kv: kv, prices: prices, logger: logger, now: now}
}

// Cursor is the sequence up to which every event is known to be applied;
// folding may restart after it.
func (l *Ledger) Cursor(ctx context.Context) (uint64, error) {
	e, err := l.kv.Get(ctx, cursorKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading ledger cursor: %w", err)
	}
	return strconv.ParseUint(string(e.Value()), 10, 64)
}

// Cost prices one event. An unknown model is charged at the dearest known
// price, never at zero; unpriced reports it.
func (l *Ledger) Cost(ev queue.UsageEvent) (cost pricing.Nanos, unpriced bool, err error) {
	cost, known, err := l.prices.Charge(ev.Model, ev.PromptTokens, ev.CachedPromptTokens, ev.CompletionTokens)
	return cost, !known && err == nil, err
}

// priced is an event with its cost and day.
type priced struct {
	Event
	day      string
	cost     pricing.Nanos
	unpriced bool
}

// Apply folds a batch of events, in stream order, into the ledger. It is
// idempotent: applying the same events again, or any prefix of them, or
// having another process apply them at the same time, changes nothing more.
// Settling an event also releases its query's hold.
func (l *Ledger) Apply(ctx context.Context, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	fresh, err := l.firstSightings(ctx, events)
	if err != nil {
		return err
	}
	var batch []priced
	for _, ev := range fresh {
		if ev.Usage.PromptTokens < 0 || ev.Usage.CachedPromptTokens < 0 || ev.Usage.CompletionTokens < 0 ||
			ev.Usage.CachedPromptTokens > ev.Usage.PromptTokens {
			l.logger.Error("usage event with impossible token counts; releasing its hold only", "seq", ev.Seq, "request_id", ev.Usage.RequestID)
			ev.Usage.PromptTokens, ev.Usage.CachedPromptTokens, ev.Usage.CompletionTokens = 0, 0, 0
		}
		cost, unpriced, err := l.Cost(ev.Usage)
		if err != nil {
			return fmt.Errorf("pricing request %s: %w", ev.Usage.RequestID, err)
		}
		if unpriced {
			l.logger.Error("usage for a model with no price: charged at the highest known price; add it to PRICING_FILE",
				"model", ev.Usage.Model, "request_id", ev.Usage.RequestID, "cost", cost.String())
		}
		batch = append(batch, priced{Event: ev, day: DayOf(ev.Usage.RequestID, ev.Usage.CompletedAt), cost: cost, unpriced: unpriced})
	}

	// Users first, then days: a crash in between is repaired by the replay,
	// which skips what each document already holds.
	byUser := map[string][]priced{}
	byDay := map[string][]priced{}
	for _, p := range batch {
		k := UserKey(p.day, p.Usage.User)
		byUser[k] = append(byUser[k], p)
		byDay[p.day] = append(byDay[p.day], p)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for key, ps := range byUser {
		g.Go(func() error { return l.applyUser(gctx, key, ps) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for day, ps := range byDay {
		if err := l.applyDay(ctx, day, ps); err != nil {
			return err
		}
	}
	return l.advanceCursor(ctx, events[len(events)-1].Seq)
}

// firstSightings drops events whose request id was first carried by
// another sequence: duplicate publishes.
func (l *Ledger) firstSightings(ctx context.Context, events []Event) ([]Event, error) {
	keep := make([]bool, len(events))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	var mu sync.Mutex
	for i, ev := range events {
		g.Go(func() error {
			first, err := l.bind(gctx, ev)
			if err != nil {
				return err
			}
			if !first {
				l.logger.Warn("duplicate usage event skipped", "request_id", ev.Usage.RequestID, "seq", ev.Seq)
			}
			mu.Lock()
			keep[i] = first
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var out []Event
	for i, ev := range events {
		if keep[i] {
			out = append(out, ev)
		}
	}
	return out, nil
}

// bind records that ev's request id belongs to ev's sequence, and reports
// whether it does (false: an earlier sequence carried the same id).
func (l *Ledger) bind(ctx context.Context, ev Event) (bool, error) {
	key := appliedKey(ev.Usage.RequestID)
	seq := strconv.FormatUint(ev.Seq, 10)
	_, err := l.kv.Create(ctx, key, []byte(seq), jetstream.KeyTTL(appliedTTL))
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return false, fmt.Errorf("binding request %s: %w", ev.Usage.RequestID, err)
	}
	e, err := l.kv.Get(ctx, key)
	if err != nil {
		return false, fmt.Errorf("reading binding of request %s: %w", ev.Usage.RequestID, err)
	}
	return string(e.Value()) == seq, nil
}

func (l *Ledger) applyUser(ctx context.Context, key string, ps []priced) error {
	return update(ctx, l.kv, key, func(u *UserDay) bool {
		changed := false
		for _, p := range ps {
			if p.Seq <= u.AppliedSeq {
				continue
			}
			u.User, u.Day = p.Usage.User, p.day
			u.Spent += p.cost
			u.Requests++
			u.AppliedSeq = p.Seq
			changed = true
		}
		return changed
	})
}

func (l *Ledger) applyDay(ctx context.Context, day string, ps []priced) error {
	now := l.now().UTC()
	return update(ctx, l.kv, DayKey(day), func(d *Day) bool {
		changed := false
		for _, p := range ps {
			if p.Seq <= d.AppliedSeq {
				continue
			}
			u := p.Usage
			d.Spent += p.cost
			d.Totals.add(p.cost, u.PromptTokens, u.CachedPromptTokens, u.CompletionTokens)
			if d.ByModel == nil {
				d.ByModel = map[string]*Tally{}
			}
			t := d.ByModel[u.Model]
			if t == nil {
				t = &Tally{}
				d.ByModel[u.Model] = t
			}
			t.add(p.cost, u.PromptTokens, u.CachedPromptTokens, u.CompletionTokens)
			if p.unpriced {
				d.Unpriced++
			}
			delete(d.Holds, u.RequestID) // the real cost replaces the hold
			d.AppliedSeq = p.Seq
			changed = true
		}
		if changed {
			d.Day = day
			d.dropLapsed(now)
			d.UpdatedAt = now
		}
		return changed
	})
}

func (l *Ledger) advanceCursor(ctx context.Context, seq uint64) error {
	for {
		e, err := l.kv.Get(ctx, cursorKey)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = l.kv.Create(ctx, cursorKey, []byte(strconv.FormatUint(seq, 10)))
		case err != nil:
			return fmt.Errorf("reading ledger cursor: %w", err)
		default:
			cur, _ := strconv.ParseUint(string(e.Value()), 10, 64)
			if cur >= seq {
				return nil
			}
			_, err = l.kv.Update(ctx, cursorKey, []byte(strconv.FormatUint(seq, 10)), e.Revision())
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("advancing ledger cursor: %w", err)
		}
	}
}

// update applies change to the JSON document at key with compare-and-swap
// (Create when it does not exist yet), retrying on conflict. change returns
// false when there is nothing to write.
func update[T any](ctx context.Context, kv jetstream.KeyValue, key string, change func(*T) bool) error {
	for {
		doc, rev, err := getJSON[T](ctx, kv, key)
		if err != nil {
			return err
		}
		if !change(&doc) {
			return nil
		}
		b, err := json.Marshal(&doc)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", key, err)
		}
		if rev == 0 {
			_, err = kv.Create(ctx, key, b)
		} else {
			_, err = kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("writing %s: %w", key, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
