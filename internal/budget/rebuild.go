package budget

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/queue"
)

// Recount is a day's ledger recomputed from the USAGE stream.
type Recount struct {
	Day    Day
	ByUser map[string]*UserDay
	Events int // events of the day read, duplicates excluded
}

// Rebuild recomputes day's ledger from the USAGE stream, independently of
// the ledger's documents: every event of the day, each request id counted
// once (its first sequence), priced like Apply does.
func (l *Ledger) Rebuild(ctx context.Context, js jetstream.JetStream, day string) (Recount, error) {
	start, err := time.Parse(time.DateOnly, day)
	if err != nil {
		return Recount{}, fmt.Errorf("day %q: %w", day, err)
	}
	s, err := js.Stream(ctx, queue.UsageStream)
	if err != nil {
		return Recount{}, fmt.Errorf("opening %s: %w", queue.UsageStream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return Recount{}, fmt.Errorf("reading %s: %w", queue.UsageStream, err)
	}
	rc := Recount{Day: Day{Day: day, ByModel: map[string]*Tally{}}, ByUser: map[string]*UserDay{}}
	if info.State.Msgs == 0 {
		return rc, nil
	}
	// Events of a day are published from its start on; read from there.
	cons, err := js.OrderedConsumer(ctx, queue.UsageStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{queue.UsageSubject},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	})
	if err != nil {
		return Recount{}, fmt.Errorf("reading %s: %w", queue.UsageStream, err)
	}
	last := info.State.LastSeq
	seen := map[string]bool{}
	for {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return Recount{}, fmt.Errorf("reading %s: %w", queue.UsageStream, err)
		}
		n := 0
		var seq uint64
		for msg := range batch.Messages() {
			n++
			ev, ok := l.decode(msg)
			if !ok {
				continue
			}
			seq = ev.Seq
			if seen[ev.Usage.RequestID] || DayOf(ev.Usage.RequestID, ev.Usage.CompletedAt) != day {
				seen[ev.Usage.RequestID] = true
				continue
			}
			seen[ev.Usage.RequestID] = true
			cost, unpriced, err := l.Cost(ev.Usage)
			if err != nil {
				return Recount{}, err
			}
			u := ev.Usage
			rc.Events++
			rc.Day.Spent += cost
			rc.Day.Totals.add(cost, u.PromptTokens, u.CachedPromptTokens, u.CompletionTokens)
			t := rc.Day.ByModel[u.Model]
			if t == nil {
				t = &Tally{}
				rc.Day.ByModel[u.Model] = t
			}
			t.add(cost, u.PromptTokens, u.CachedPromptTokens, u.CompletionTokens)
			if unpriced {
				rc.Day.Unpriced++
			}
			ud := rc.ByUser[u.User]
			if ud == nil {
				ud = &UserDay{User: u.User, Day: day}
				rc.ByUser[u.User] = ud
			}
			ud.Spent += cost
			ud.Requests++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return Recount{}, fmt.Errorf("reading %s: %w", queue.UsageStream, err)
		}
		if seq >= last || n == 0 {
			return rc, nil
		}
	}
}

// Diff compares a recount with the ledger's documents and describes every
// difference; none means the ledger is exact.
func (l *Ledger) Diff(ctx context.Context, rc Recount) ([]string, error) {
	var diffs []string
	d, _, err := getJSON[Day](ctx, l.kv, DayKey(rc.Day.Day))
	if err != nil {
		return nil, err
	}
	if d.Spent != rc.Day.Spent {
		diffs = append(diffs, fmt.Sprintf("spent: ledger %s, stream %s", d.Spent, rc.Day.Spent))
	}
	if d.Totals != rc.Day.Totals {
		diffs = append(diffs, fmt.Sprintf("totals: ledger %+v, stream %+v", d.Totals, rc.Day.Totals))
	}
	models := slices.Sorted(maps.Keys(rc.Day.ByModel))
	for m := range d.ByModel {
		if rc.Day.ByModel[m] == nil {
			models = append(models, m)
		}
	}
	for _, m := range models {
		var got, want Tally
		if t := d.ByModel[m]; t != nil {
			got = *t
		}
		if t := rc.Day.ByModel[m]; t != nil {
			want = *t
		}
		if got != want {
			diffs = append(diffs, fmt.Sprintf("model %s: ledger %+v, stream %+v", m, got, want))
		}
	}
	for _, user := range slices.Sorted(maps.Keys(rc.ByUser)) {
		want := rc.ByUser[user]
		got, _, err := getJSON[UserDay](ctx, l.kv, UserKey(rc.Day.Day, user))
		if err != nil {
			return nil, err
		}
		if got.Spent != want.Spent || got.Requests != want.Requests {
			diffs = append(diffs, fmt.Sprintf("user %q: ledger %s over %d requests, stream %s over %d",
				user, got.Spent, got.Requests, want.Spent, want.Requests))
		}
	}
	return diffs, nil
}

// getJSON reads a JSON document; a missing key is the zero value.
func getJSON[T any](ctx context.Context, kv jetstream.KeyValue, key string) (T, uint64, error) {
	var doc T
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return doc, 0, nil
	}
	if err != nil {
		return doc, 0, fmt.Errorf("reading %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), &doc); err != nil {
		return doc, 0, fmt.Errorf("decoding %s: %w", key, err)
	}
	return doc, e.Revision(), nil
}
