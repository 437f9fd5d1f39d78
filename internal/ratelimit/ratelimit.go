// Package ratelimit enforces Tollgate's per-user request limits: a token
// bucket (a burst of Capacity requests, refilled at RefillPerSecond) and a
// quota of accepted requests per UTC day.
//
// The arithmetic lives in [Policy], a pure function of a stored [State] and
// the current time, so it can be tested with a fake clock and reused to show a
// user their limits. [Limiter] keeps one State per user in a JetStream
// key-value bucket and changes it only by compare-and-swap, so any number of
// api replicas sharing one NATS enforce one exact limit. When NATS cannot be
// reached the Limiter fails closed: its methods return an error wrapping
// [ErrUnavailable], and it works again as soon as NATS is back.
package ratelimit

import (
	"errors"
	"fmt"
	"time"
)

var (
	// ErrLimited is wrapped by a [*Refusal]: the user is over a limit.
	ErrLimited = errors.New("rate limited")

	// ErrUnavailable is wrapped by every error that comes from not reaching
	// the state store in time (NATS down, timeouts, endless write conflicts).
	// The request must be refused; retrying later may succeed.
	ErrUnavailable = errors.New("rate limiter unavailable")
)

// Limit names the limit that refused a request.
type Limit string

// The limits a request can run into.
const (
	Burst Limit = "burst" // the token bucket is empty
	Daily Limit = "daily" // the user's requests for this UTC day are used up
)

// Refusal is the error form of a refused [Decision], for code that reports
// refusals as errors. It wraps [ErrLimited].
type Refusal struct {
	Limit      Limit         // the limit that refused the request
	RetryAfter time.Duration // how long until the same request would be accepted
}

// Error describes the refusal, e.g. "rate limited: daily limit, retry after 3h0m0s".
func (r *Refusal) Error() string {
	return fmt.Sprintf("%v: %s limit, retry after %v", ErrLimited, r.Limit, r.RetryAfter)
}

// Unwrap returns [ErrLimited].
func (r *Refusal) Unwrap() error { return ErrLimited }
