package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const (
	// kvTimeout bounds each call to the key-value store, so that a request
	// fails promptly with ErrUnavailable when NATS is unreachable.
	kvTimeout = 2 * time.Second

	// maxAttempts bounds the read-change-write rounds of one operation. A
	// round only fails because another writer succeeded, so reaching it
	// takes extreme contention on one user.
	maxAttempts = 50

	// Backoff between rounds is random in [0, ceiling), the ceiling doubling
	// from backoffBase up to backoffMax, so that writers that collided spread out.
	backoffBase = 500 * time.Microsecond
	backoffMax  = 16 * time.Millisecond

	// maxPlainID is the longest user id, in bytes, whose key is its own
	// encoding; longer ids are hashed to keep keys short.
	maxPlainID = 128
)

// errConflict reports that another writer changed the state first.
var errConflict = errors.New("state changed by another writer")

// Limiter applies a [Policy] to users whose states live in a key-value
// bucket (the "ratelimit" bucket), one key per user (see [Key]). Every change
// is a compare-and-swap, so Limiters in any number of processes sharing the
// bucket enforce one exact limit. It keeps no state of its own besides a
// counter, and is safe for concurrent use.
type Limiter struct {
	kv      jetstream.KeyValue
	policy  Policy
	now     func() time.Time
	retries atomic.Uint64
}

// New returns a Limiter applying p to the states in kv, reading the time
// from now (time.Now when nil).
func New(kv jetstream.KeyValue, p Policy, now func() time.Time) (*Limiter, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Limiter{kv: kv, policy: p, now: now}, nil
}

// Take decides one request of user. An allowed request has spent a token
// and a request of the day; a refused one ([Decision].Allowed false, nil
// error) has spent nothing. An error means no decision could be made: it
// wraps [ErrUnavailable] when the store could not be reached, and the request
// must be refused.
func (l *Limiter) Take(ctx context.Context, user string) (Decision, error) {
	var d Decision
	err := l.change(ctx, user, func(s State, now time.Time) State {
		var next State
		next, d = l.policy.Take(s, now)
		return next
	})
	if err != nil {
		return Decision{}, fmt.Errorf("taking a rate limit token: %w", err)
	}
	return d, nil
}

// Refund gives back what an allowed request of user took (see
// [Policy.Refund]), for a request refused after Take allowed it.
func (l *Limiter) Refund(ctx context.Context, user string) error {
	if err := l.change(ctx, user, l.policy.Refund); err != nil {
		return fmt.Errorf("refunding a rate limit token: %w", err)
	}
	return nil
}

// Status returns user's limits now, without changing them.
func (l *Limiter) Status(ctx context.Context, user string) (Status, error) {
	s, _, err := l.load(ctx, Key(user))
	if err != nil {
		return Status{}, fmt.Errorf("reading rate limit status: %w", err)
	}
	return l.policy.Status(s, l.now()), nil
}

// Retries returns how many times, since New, a write lost to a concurrent
// writer and its operation was read and decided again.
func (l *Limiter) Retries() uint64 {
	return l.retries.Load()
}

// Key returns the key of user's state in the bucket. Any user id (auth0|abc,
// an email, unicode, spaces, the empty string) gives a valid NATS key made
// of [-_A-Za-z0-9], and distinct ids give distinct keys: "u_" and the id in
// unpadded base64url, or, for ids over 128 bytes, "h_" and the same encoding
// of its SHA-256.
func Key(user string) string {
	if len(user) <= maxPlainID {
		return "u_" + base64.RawURLEncoding.EncodeToString([]byte(user))
	}
	sum := sha256.Sum256([]byte(user))
	return "h_" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// change applies fn to user's state by compare-and-swap: read the state and
// its revision, let fn decide at the current time, write the result only if
// the revision is still the latest, and otherwise start over. Nothing is
// written when fn leaves the state as it was.
func (l *Limiter) change(ctx context.Context, user string, fn func(State, time.Time) State) error {
	key := Key(user)
	for attempt := 1; ; attempt++ {
		s, rev, err := l.load(ctx, key)
		if err != nil {
			return err
		}
		next := fn(s, l.now())
		if next.equal(s) {
			return nil
		}
		err = l.store(ctx, key, next, rev)
		if !errors.Is(err, errConflict) {
			return err
		}
		l.retries.Add(1)
		if attempt == maxAttempts {
			return fmt.Errorf("writing %s: %w: %d conflicting writes in a row", key, ErrUnavailable, attempt)
		}
		if err := sleep(ctx, backoff(attempt)); err != nil {
			return fmt.Errorf("writing %s: %w: %w", key, ErrUnavailable, err)
		}
	}
}

// load returns the state under key and its revision; a missing key is a
// new user, with the zero State and revision 0.
func (l *Limiter) load(ctx context.Context, key string) (State, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	e, err := l.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return State{}, 0, nil
	}
	if err != nil {
		return State{}, 0, fmt.Errorf("reading %s: %w: %w", key, ErrUnavailable, err)
	}
	var s State
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return State{}, 0, fmt.Errorf("decoding %s: %w", key, err)
	}
	if s.Day != "" {
		if _, err := time.Parse(time.DateOnly, s.Day); err != nil {
			return State{}, 0, fmt.Errorf("decoding %s: day: %w", key, err)
		}
	}
	return s, e.Revision(), nil
}

// store writes s under key if rev is still its latest revision (0: if the
// key does not exist), and returns errConflict if it is not.
func (l *Limiter) store(ctx context.Context, key string, s State, rev uint64) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key, err)
	}
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	if rev == 0 {
		_, err = l.kv.Create(ctx, key, b)
	} else {
		_, err = l.kv.Update(ctx, key, b, rev)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return errConflict
	default:
		return fmt.Errorf("writing %s: %w: %w", key, ErrUnavailable, err)
	}
}

// backoff returns a random pause before round attempt+1.
func backoff(attempt int) time.Duration {
	ceiling := min(backoffBase<<min(attempt-1, 8), backoffMax)
	return rand.N(ceiling)
}

// sleep waits for d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
