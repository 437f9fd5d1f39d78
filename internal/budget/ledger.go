// Package budget keeps the spending ledger and enforces the daily budget.
//
// The ledger lives in the key-value bucket "budget", one document per UTC
// day ("day.2026-12-03": spent, reserved, tokens, by model, the holds of
// queries in flight) and one per user and day ("user.2026-12-03.<user>").
// The alerter folds the USAGE stream into it with [Ledger.Apply], exactly
// once; the api reserves each query's worst-case cost with [Guard.Reserve]
// before admitting it, and the settlement of the query replaces the hold
// with the real cost in the same compare-and-swap, so the day's spend can
// never pass the budget.
//
// Money is integer nano-dollars ([pricing.Nanos]) throughout.
package budget

import (
	"cmp"
	"context"
	"encoding/base32"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/gravitycar/tollgate/internal/pricing"
)

// ErrExhausted is returned when admitting a query could take the day's
// spend past the budget.
var ErrExhausted = errors.New("daily budget exhausted")

// Day is the ledger of one UTC day.
type Day struct {
	Day         string            `json:"day"` // YYYY-MM-DD
	Spent       pricing.Nanos     `json:"spent_nanos"`
	Totals      Tally             `json:"totals"`
	ByModel     map[string]*Tally `json:"by_model,omitempty"`
	Holds       map[string]Hold   `json:"holds,omitempty"`        // reservations of queries in flight, by query id
	ExhaustedAt *time.Time        `json:"exhausted_at,omitempty"` // first time admission was refused for budget
	Unpriced    int               `json:"unpriced,omitempty"`     // events whose model had no price (charged at the highest known price)
	AppliedSeq  uint64            `json:"applied_seq"`            // highest USAGE sequence folded in
	UpdatedAt   time.Time         `json:"updated_at"`
}

// Tally is what a set of requests consumed.
type Tally struct {
	Spent              pricing.Nanos `json:"spent_nanos"`
	Requests           int           `json:"requests"`
	PromptTokens       int64         `json:"prompt_tokens"`
	CachedPromptTokens int64         `json:"cached_prompt_tokens"`
	CompletionTokens   int64         `json:"completion_tokens"`
}

// Hold is the worst-case cost reserved for a query in flight. It lapses at
// Expires, when the query cannot run any more.
type Hold struct {
	Amount  pricing.Nanos `json:"amount_nanos"`
	Expires time.Time     `json:"expires"`
}

// UserDay is one user's spend on one day.
type UserDay struct {
	User       string        `json:"user"`
	Day        string        `json:"day"`
	Spent      pricing.Nanos `json:"spent_nanos"`
	Requests   int           `json:"requests"`
	AppliedSeq uint64        `json:"applied_seq"`
}

// Reserved is the sum of the holds that have not lapsed at now.
func (d *Day) Reserved(now time.Time) pricing.Nanos {
	var sum pricing.Nanos
	for _, h := range d.Holds {
		if now.Before(h.Expires) {
			sum += h.Amount
		}
	}
	return sum
}

// dropLapsed forgets holds that have lapsed, so none outlives its query.
func (d *Day) dropLapsed(now time.Time) {
	for id, h := range d.Holds {
		if !now.Before(h.Expires) {
			delete(d.Holds, id)
		}
	}
}

func (t *Tally) add(cost pricing.Nanos, prompt, cached, completion int) {
	t.Spent += cost
	t.Requests++
	t.PromptTokens += int64(prompt)
	t.CachedPromptTokens += int64(cached)
	t.CompletionTokens += int64(completion)
}

// DayOf is the UTC day a query is charged to: the day it was admitted,
// which its ULID records, so its hold and its cost land in the same day's
// budget. Ids that are not ULIDs fall back to at.
func DayOf(id string, at time.Time) string {
	if u, err := ulid.ParseStrict(id); err == nil {
		return ulid.Time(u.Time()).UTC().Format(time.DateOnly)
	}
	return at.UTC().Format(time.DateOnly)
}

// Today is now's UTC day.
func Today(now time.Time) string { return now.UTC().Format(time.DateOnly) }

// UntilMidnight is how long until the UTC day after now starts.
func UntilMidnight(now time.Time) time.Duration {
	now = now.UTC()
	next := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	return next.Sub(now)
}

// Keys in the budget bucket.
const cursorKey = "cursor"

// DayKey is the key of a day's ledger.
func DayKey(day string) string { return "day." + day }

// UserKey is the key of a user's spend on a day.
func UserKey(day, user string) string { return "user." + day + "." + EncodeUser(user) }

func appliedKey(requestID string) string { return "applied." + EncodeUser(requestID) }

// EncodeUser encodes a user id (auth0|abc, an email, anything) as
// unpadded lower-case base32, which is always a valid part of a NATS key.
// The empty id, which base32 would make empty, is "_".
func EncodeUser(user string) string {
	if user == "" {
		return "_"
	}
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString([]byte(user)))
}

// ReadDay returns a day's ledger; a day with no activity is empty.
func ReadDay(ctx context.Context, kv jetstream.KeyValue, day string) (Day, error) {
	d, _, err := getJSON[Day](ctx, kv, DayKey(day))
	d.Day = day
	return d, err
}

// Users returns every user's spend on a day, the biggest spender first.
func Users(ctx context.Context, kv jetstream.KeyValue, day string) ([]UserDay, error) {
	lister, err := kv.ListKeysFiltered(ctx, "user."+day+".*")
	if err != nil {
		return nil, fmt.Errorf("listing users of %s: %w", day, err)
	}
	var users []UserDay
	for key := range lister.Keys() {
		u, _, err := getJSON[UserDay](ctx, kv, key)
		if err != nil {
			return nil, err
		}
		users = append(users, u)
	}
	slices.SortFunc(users, func(a, b UserDay) int {
		if c := cmp.Compare(b.Spent, a.Spent); c != 0 {
			return c
		}
		return cmp.Compare(a.User, b.User)
	})
	return users, nil
}

// Models returns a day's spend by model, the biggest first.
func (d *Day) Models() []ModelTally {
	out := make([]ModelTally, 0, len(d.ByModel))
	for m, t := range d.ByModel {
		out = append(out, ModelTally{Model: m, Tally: *t})
	}
	slices.SortFunc(out, func(a, b ModelTally) int {
		if c := cmp.Compare(b.Spent, a.Spent); c != 0 {
			return c
		}
		return cmp.Compare(a.Model, b.Model)
	})
	return out
}

// ModelTally is one model's line of a day.
type ModelTally struct {
	Model string
	Tally
}
