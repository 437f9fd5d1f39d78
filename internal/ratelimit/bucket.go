package ratelimit

import (
	"fmt"
	"math"
	"time"
)

// Policy is the limit every user gets: a token bucket holding up to Capacity
// tokens, refilled continuously at RefillPerSecond, and at most DailyLimit
// accepted requests per UTC day. An accepted request costs one token and one
// request of the day.
//
// Its methods are the pure arithmetic: they take a stored [State] and the
// current time and return what to store and what to answer.
type Policy struct {
	Capacity        float64 // most tokens the bucket holds, and what a new user starts with; at least 1
	RefillPerSecond float64 // tokens gained per second, e.g. 1.0/60 for one a minute
	DailyLimit      int     // accepted requests per UTC day, counted from midnight UTC; 0 means no daily limit
}

// maxWindow bounds the time an empty bucket takes to fill, so that it fits
// in a time.Duration with room to spare (about 146 years).
const maxWindow = 1 << 62

// Validate reports whether p describes a usable limit.
func (p Policy) Validate() error {
	switch {
	case math.IsNaN(p.Capacity) || math.IsInf(p.Capacity, 0) || p.Capacity < 1:
		return fmt.Errorf("rate limit capacity %v: must be a number of at least 1", p.Capacity)
	case math.IsNaN(p.RefillPerSecond) || math.IsInf(p.RefillPerSecond, 0) || p.RefillPerSecond <= 0:
		return fmt.Errorf("rate limit refill rate %v: must be a positive number of tokens per second", p.RefillPerSecond)
	case float64(time.Second)/p.RefillPerSecond*p.Capacity > maxWindow:
		return fmt.Errorf("rate limit refill rate %v: too slow to fill %v tokens", p.RefillPerSecond, p.Capacity)
	case p.DailyLimit < 0:
		return fmt.Errorf("rate limit daily limit %d: must not be negative (0 means none)", p.DailyLimit)
	}
	return nil
}

// State is one user's stored limiter state.
//
// The bucket is kept as the instant it will be full again rather than as a
// token count: the tokens at any instant follow from it exactly
// (Capacity − (FullAt − now) × RefillPerSecond), time passing never touches
// the stored state, and each accepted request moves FullAt by a whole number
// of nanoseconds. So fractional refill is exact and cannot drift however often
// the state is read or written.
//
// It is stored as JSON, e.g. {"full_at":"2026-03-14T12:14:59.98Z","day":"2026-03-14","day_count":15}.
type State struct {
	// FullAt is when the bucket is full again. The zero time, or any instant
	// before now, means it is full.
	FullAt time.Time `json:"full_at,omitzero"`
	// Day is the UTC day DayCount belongs to, as YYYY-MM-DD.
	Day string `json:"day,omitempty"`
	// DayCount is the number of requests accepted on Day.
	DayCount int `json:"day_count,omitempty"`
}

// equal reports whether s and o are the same state.
func (s State) equal(o State) bool {
	return s.FullAt.Equal(o.FullAt) && s.Day == o.Day && s.DayCount == o.DayCount
}

// Status is a user's limits as seen at one instant, for the RateLimit-*
// response headers and GET /v1/me. When writing durations as whole seconds
// (headers), round them up, so that a client never retries too early.
type Status struct {
	At time.Time // the instant described, in UTC

	Capacity float64 // most tokens the bucket holds (the RateLimit-Limit header)
	Tokens   float64 // tokens in the bucket at At, fractional, between 0 and Capacity
	// Remaining is how many requests would be accepted right now: the whole
	// tokens in the bucket, bounded by what is left of the daily limit (the
	// RateLimit-Remaining header).
	Remaining int
	// Reset is how long until Remaining is above zero; 0 when it already is
	// (the RateLimit-Reset header).
	Reset time.Duration
	// NextTokenAt is when Tokens next reaches a whole number (or Capacity);
	// the zero time when the bucket is full.
	NextTokenAt time.Time

	DailyUsed   int       // requests accepted on the current UTC day
	DailyLimit  int       // the Policy's DailyLimit; 0 means none
	DayResetsAt time.Time // the midnight UTC at which DailyUsed returns to 0
}

// Decision is the answer to one request.
type Decision struct {
	Allowed bool
	// Limit is the limit that refused the request; empty when it was allowed.
	// When both are exhausted it is the one that frees up last.
	Limit Limit
	// RetryAfter is how long until the same request would be accepted (the
	// Retry-After header): for Burst, until the next whole token; for Daily,
	// until midnight UTC. It is 0 when the request was allowed.
	RetryAfter time.Duration
	// Status is the user's limits after this request: once it has spent its
	// token when allowed, as they were when refused.
	Status
}

// Err returns nil for an allowed request and a [*Refusal] wrapping
// [ErrLimited] for a refused one.
func (d Decision) Err() error {
	if d.Allowed {
		return nil
	}
	return &Refusal{Limit: d.Limit, RetryAfter: d.RetryAfter}
}

// Take decides one request at now. When it is allowed, the returned State
// has spent one token and one request of the day; when it is refused, the
// State is returned unchanged.
func (p Policy) Take(s State, now time.Time) (State, Decision) {
	v := p.view(s, now)
	burstWait, dailyWait := p.waits(v)
	if burstWait > 0 || dailyWait > 0 {
		d := Decision{Limit: Burst, RetryAfter: max(burstWait, dailyWait), Status: p.status(v)}
		if dailyWait >= burstWait {
			d.Limit = Daily
		}
		return s, d
	}
	after := v
	after.debt += p.tokenInterval()
	after.used++
	next := State{FullAt: after.now.Add(after.debt), Day: after.day, DayCount: after.used}
	return next, Decision{Allowed: true, Status: p.status(after)}
}

// Refund gives back what an allowed request took, for a request refused
// after its token was spent: one token, never above Capacity, and one
// request of the current UTC day (nothing if the day has changed since).
func (p Policy) Refund(s State, now time.Time) State {
	v := p.view(s, now)
	if v.debt > 0 {
		s.FullAt = v.now.Add(max(v.debt-p.tokenInterval(), 0))
	}
	if v.used > 0 {
		s.DayCount = v.used - 1
	}
	return s
}

// Status describes s at now, without changing it.
func (p Policy) Status(s State, now time.Time) Status {
	return p.status(p.view(s, now))
}

// view is a State as seen at one instant.
type view struct {
	now      time.Time     // in UTC, without a monotonic clock reading
	debt     time.Duration // until the bucket is full; 0 when it is
	day      string        // the UTC day that used belongs to, as YYYY-MM-DD
	dayStart time.Time     // the midnight UTC that starts day
	used     int           // requests accepted on day
}

func (p Policy) view(s State, now time.Time) view {
	now = now.UTC()
	v := view{now: now, day: now.Format(time.DateOnly), dayStart: dayStart(now)}
	if debt := s.FullAt.Sub(now); debt > 0 {
		v.debt = debt
	}
	switch {
	case s.Day == v.day:
		v.used = s.DayCount
	case s.Day > v.day:
		// A count written by a clock that is ahead of ours, already in
		// tomorrow, still applies, so that no clock resets the count early.
		// A day that is not a date counts as an old day.
		if start, err := time.Parse(time.DateOnly, s.Day); err == nil {
			v.day, v.dayStart, v.used = s.Day, start, s.DayCount
		}
	}
	return v
}

// dayStart returns the midnight that starts t's day, for t in UTC.
func dayStart(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// tokenInterval is how long the bucket takes to gain one token, at least 1ns.
func (p Policy) tokenInterval() time.Duration {
	return max(time.Duration(math.Round(float64(time.Second)/p.RefillPerSecond)), 1)
}

// window is how long an empty bucket takes to fill.
func (p Policy) window() time.Duration {
	return time.Duration(math.Round(p.Capacity * float64(p.tokenInterval())))
}

// waits returns how long until the bucket holds a whole token, and until the
// daily limit allows a request; 0 when it does now.
func (p Policy) waits(v view) (burst, daily time.Duration) {
	// The bucket holds a token when the debt leaves room for one more
	// interval in the window. The debt can exceed the window only when the
	// clock went backwards; refill then waits for the clock to catch up.
	burst = max(v.debt+p.tokenInterval()-p.window(), 0)
	if p.DailyLimit > 0 && v.used >= p.DailyLimit {
		daily = v.dayStart.AddDate(0, 0, 1).Sub(v.now)
	}
	return burst, daily
}

func (p Policy) status(v view) Status {
	interval, window := p.tokenInterval(), p.window()
	st := Status{
		At:          v.now,
		Capacity:    p.Capacity,
		Tokens:      p.Capacity,
		DailyUsed:   v.used,
		DailyLimit:  p.DailyLimit,
		DayResetsAt: v.dayStart.AddDate(0, 0, 1),
	}
	// The bucket's tokens, as time spent refilling. It is negative only
	// when the clock went backwards.
	held := window - v.debt
	whole := 0
	if held > 0 {
		whole = int(held / interval)
	}
	if v.debt > 0 {
		st.Tokens = min(max(float64(held)/float64(interval), 0), p.Capacity)
		st.NextTokenAt = v.now.Add(min(time.Duration(whole+1)*interval, window) - held)
	}
	st.Remaining = whole
	if p.DailyLimit > 0 {
		st.Remaining = min(whole, max(p.DailyLimit-v.used, 0))
	}
	burst, daily := p.waits(v)
	st.Reset = max(burst, daily)
	return st
}
