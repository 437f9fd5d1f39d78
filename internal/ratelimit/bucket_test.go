package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"
)

// minute is the time one token takes at the contract's refill rate of
// 0.016667 tokens/s: 1/0.016667 s, rounded to the nanosecond.
const minute = 59998800024 * time.Nanosecond

// contractPolicy is the contract's default: 15 tokens, one a minute, 30 a day.
func contractPolicy() Policy {
	return Policy{Capacity: 15, RefillPerSecond: 0.016667, DailyLimit: 30}
}

// at returns an instant of 2026-03-14 (day 1) or, with a "+1" suffix, of
// 2026-03-15 (day 2), from "hh:mm:ss[.fff]".
func at(t *testing.T, clock string) time.Time {
	t.Helper()
	day := "2026-03-14T"
	if len(clock) > 2 && clock[len(clock)-2:] == "+1" {
		day, clock = "2026-03-15T", clock[:len(clock)-2]
	}
	ts, err := time.Parse(time.RFC3339Nano, day+clock+"Z")
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// takeN takes n times at now, requiring every request to be allowed.
func takeN(t *testing.T, p Policy, s State, now time.Time, n int) State {
	t.Helper()
	for i := range n {
		var d Decision
		s, d = p.Take(s, now)
		if !d.Allowed {
			t.Fatalf("take %d of %d at %v refused: %+v", i+1, n, now, d)
		}
	}
	return s
}

// near reports whether a and b differ by at most 1e-9.
func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9 }

func TestPolicyTake(t *testing.T) {
	t.Parallel()
	type step struct {
		at      string        // see at
		n       int           // requests at this instant; 1 when zero
		allowed bool          // want for each of them
		limit   Limit         // want when refused
		retry   time.Duration // want RetryAfter when refused
	}
	tests := []struct {
		name   string
		policy Policy
		steps  []step
	}{
		{
			name:   "burst exhausted, 16th waits one token",
			policy: contractPolicy(),
			steps: []step{
				{at: "12:00:00", n: 15, allowed: true},
				{at: "12:00:00", limit: Burst, retry: minute},
				{at: "12:00:10", limit: Burst, retry: minute - 10*time.Second},
			},
		},
		{
			name:   "refill after a minute gives exactly one",
			policy: contractPolicy(),
			steps: []step{
				{at: "12:00:00", n: 15, allowed: true},
				{at: "12:00:59.99", limit: Burst, retry: minute - 59990*time.Millisecond},
				{at: "12:01:00", allowed: true},
				{at: "12:01:00", limit: Burst, retry: 2*minute - time.Minute},
			},
		},
		{
			name:   "daily limit reached before burst waits for midnight",
			policy: Policy{Capacity: 15, RefillPerSecond: 0.016667, DailyLimit: 3},
			steps: []step{
				{at: "12:00:00", n: 3, allowed: true},
				{at: "12:00:00", limit: Daily, retry: 12 * time.Hour},
				{at: "18:30:00", limit: Daily, retry: 5*time.Hour + 30*time.Minute},
			},
		},
		{
			name:   "midnight UTC resets the daily count",
			policy: Policy{Capacity: 15, RefillPerSecond: 0.016667, DailyLimit: 3},
			steps: []step{
				{at: "23:59:00", n: 3, allowed: true},
				{at: "23:59:59.5", limit: Daily, retry: 500 * time.Millisecond},
				{at: "00:00:00+1", n: 3, allowed: true},
				{at: "00:00:00+1", limit: Daily, retry: 24 * time.Hour},
			},
		},
		{
			name:   "both exhausted, burst frees up last",
			policy: Policy{Capacity: 1, RefillPerSecond: 1.0 / 3600, DailyLimit: 1},
			steps: []step{
				{at: "23:30:00", allowed: true},
				{at: "23:45:00", limit: Burst, retry: 45 * time.Minute},
			},
		},
		{
			name:   "both exhausted, daily frees up last",
			policy: Policy{Capacity: 1, RefillPerSecond: 1.0 / 60, DailyLimit: 1},
			steps: []step{
				{at: "23:30:00", allowed: true},
				{at: "23:30:30", limit: Daily, retry: 29*time.Minute + 30*time.Second},
			},
		},
		{
			name:   "clock going backwards mints no tokens",
			policy: contractPolicy(),
			steps: []step{
				{at: "12:00:00", n: 15, allowed: true},
				{at: "11:00:00", limit: Burst, retry: time.Hour + minute},
				{at: "11:59:59", limit: Burst, retry: time.Second + minute},
				{at: "12:00:59.9", limit: Burst, retry: minute - 59900*time.Millisecond},
				{at: "12:01:00", allowed: true},
				{at: "12:01:00", limit: Burst, retry: 2*minute - time.Minute},
			},
		},
		{
			name:   "clock going back over midnight keeps the new day's count",
			policy: Policy{Capacity: 15, RefillPerSecond: 0.016667, DailyLimit: 3},
			steps: []step{
				{at: "00:00:10+1", n: 3, allowed: true},
				{at: "23:59:59", limit: Daily, retry: 24*time.Hour + time.Second},
				{at: "00:00:00+1", limit: Daily, retry: 24 * time.Hour},
			},
		},
		{
			name:   "no daily limit",
			policy: Policy{Capacity: 2, RefillPerSecond: 1, DailyLimit: 0},
			steps: []step{
				{at: "12:00:00", n: 2, allowed: true},
				{at: "12:00:02", n: 2, allowed: true},
				{at: "12:00:04", n: 2, allowed: true},
				{at: "12:00:04", limit: Burst, retry: time.Second},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.policy.Validate(); err != nil {
				t.Fatal(err)
			}
			var s State
			for i, st := range tt.steps {
				now := at(t, st.at)
				for j := range max(st.n, 1) {
					next, d := tt.policy.Take(s, now)
					where := func() string { return fmt.Sprintf("step %d (%s) request %d: %+v", i, st.at, j+1, d) }
					switch {
					case d.Allowed != st.allowed:
						t.Fatalf("%s: Allowed = %v, want %v", where(), d.Allowed, st.allowed)
					case d.Allowed && (d.Limit != "" || d.RetryAfter != 0):
						t.Errorf("%s: allowed with a Limit or RetryAfter", where())
					case d.Allowed && next.equal(s):
						t.Fatalf("%s: allowed without spending", where())
					case !d.Allowed && (d.Limit != st.limit || d.RetryAfter != st.retry):
						t.Errorf("%s: refused by %q for %v, want %q for %v", where(), d.Limit, d.RetryAfter, st.limit, st.retry)
					case !d.Allowed && (d.Reset != d.RetryAfter || d.Remaining != 0):
						t.Errorf("%s: refused with Reset %v, Remaining %d; want Reset = RetryAfter, Remaining 0", where(), d.Reset, d.Remaining)
					case !d.Allowed && !next.equal(s):
						t.Fatalf("%s: a refusal changed the state: %+v → %+v", where(), s, next)
					}
					s = next
				}
			}
		})
	}
}

// TestPolicyRefillDoesNotDrift steps the clock 10ms at a time for ten
// minutes and takes whenever a token is there: the k-th token must come at
// the first step at or after k token intervals since the bucket emptied,
// however many small steps came between, and the fractional tokens seen at
// every step must be the elapsed time times the rate.
func TestPolicyRefillDoesNotDrift(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rate     float64
		interval time.Duration // 1/rate seconds, rounded to the nanosecond
		want     int           // tokens over the ten minutes
	}{
		{rate: 0.016667, interval: minute, want: 10},
		{rate: 0.3, interval: 3333333333, want: 180},
		{rate: 7, interval: 142857143, want: 4199},
	}
	const step, steps = 10 * time.Millisecond, 60000
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.rate), func(t *testing.T) {
			t.Parallel()
			p := Policy{Capacity: 15, RefillPerSecond: tt.rate}
			start := at(t, "12:00:00")
			s := takeN(t, p, State{}, start, 15)
			got := 0
			for i := 1; i <= steps; i++ {
				now := start.Add(time.Duration(i) * step)
				want := float64(now.Sub(start)-time.Duration(got)*tt.interval) / float64(tt.interval)
				if tokens := p.Status(s, now).Tokens; !near(tokens, want) {
					t.Fatalf("step %d: %v tokens, want %v", i, tokens, want)
				}
				var d Decision
				s, d = p.Take(s, now)
				if !d.Allowed {
					continue
				}
				got++
				if wantStep := (time.Duration(got)*tt.interval + step - 1) / step; int(wantStep) != i {
					t.Fatalf("token %d came at step %d, want %d", got, i, wantStep)
				}
			}
			if got != tt.want {
				t.Errorf("%d tokens in ten minutes, want %d", got, tt.want)
			}
		})
	}
}

func TestPolicyStatus(t *testing.T) {
	t.Parallel()
	p := contractPolicy()
	noon := at(t, "12:00:00")
	tests := []struct {
		name  string
		state State
		want  Status // At, Capacity and DayResetsAt are filled in
	}{
		{
			name:  "new user",
			state: State{},
			want:  Status{Tokens: 15, Remaining: 15, DailyLimit: 30},
		},
		{
			name:  "half a token refilled since the last request",
			state: State{FullAt: noon.Add(minute - 30*time.Second), Day: "2026-03-14", DayCount: 1},
			want: Status{
				Tokens: 15 - float64(minute-30*time.Second)/float64(minute), Remaining: 14,
				NextTokenAt: noon.Add(minute - 30*time.Second), DailyUsed: 1, DailyLimit: 30,
			},
		},
		{
			name:  "empty bucket",
			state: State{FullAt: noon.Add(15 * minute), Day: "2026-03-14", DayCount: 15},
			want: Status{
				Tokens: 0, Remaining: 0, Reset: minute,
				NextTokenAt: noon.Add(minute), DailyUsed: 15, DailyLimit: 30,
			},
		},
		{
			name:  "one request left today",
			state: State{Day: "2026-03-14", DayCount: 29},
			want:  Status{Tokens: 15, Remaining: 1, DailyUsed: 29, DailyLimit: 30},
		},
		{
			name:  "no requests left today",
			state: State{Day: "2026-03-14", DayCount: 30},
			want:  Status{Tokens: 15, Remaining: 0, Reset: 12 * time.Hour, DailyUsed: 30, DailyLimit: 30},
		},
		{
			name:  "yesterday's count does not apply",
			state: State{Day: "2026-03-13", DayCount: 30},
			want:  Status{Tokens: 15, Remaining: 15, DailyLimit: 30},
		},
		{
			name:  "a day that is not a date counts as old",
			state: State{Day: "someday", DayCount: 30},
			want:  Status{Tokens: 15, Remaining: 15, DailyLimit: 30},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := tt.want
			want.At, want.Capacity, want.DayResetsAt = noon, 15, at(t, "00:00:00+1")
			got := p.Status(tt.state, noon)
			if !near(got.Tokens, want.Tokens) {
				t.Errorf("Tokens = %v, want %v", got.Tokens, want.Tokens)
			}
			got.Tokens = want.Tokens
			if got != want {
				t.Errorf("Status =\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestPolicyStatusFractionalCapacity(t *testing.T) {
	t.Parallel()
	p := Policy{Capacity: 2.5, RefillPerSecond: 1}
	noon := at(t, "12:00:00")
	if st := p.Status(State{}, noon); st.Tokens != 2.5 || st.Remaining != 2 {
		t.Errorf("new bucket: %v tokens, %d remaining; want 2.5, 2", st.Tokens, st.Remaining)
	}
	s := takeN(t, p, State{}, noon, 2)
	st := p.Status(s, noon)
	if !near(st.Tokens, 0.5) || st.Remaining != 0 || st.Reset != 500*time.Millisecond {
		t.Errorf("after 2: %v tokens, %d remaining, reset %v; want 0.5, 0, 500ms", st.Tokens, st.Remaining, st.Reset)
	}
	// From 0.5 the next whole number is 1, from 1.5 it is 2, and from 2.1
	// the next is the capacity, 2.5.
	for _, tc := range []struct{ after, next time.Duration }{
		{0, 500 * time.Millisecond},
		{time.Second, 1500 * time.Millisecond},
		{1600 * time.Millisecond, 2 * time.Second},
	} {
		if got := p.Status(s, noon.Add(tc.after)).NextTokenAt; !got.Equal(noon.Add(tc.next)) {
			t.Errorf("%v after: NextTokenAt %v, want %v", tc.after, got, noon.Add(tc.next))
		}
	}
}

func TestPolicyRefund(t *testing.T) {
	t.Parallel()
	p := contractPolicy()
	noon := at(t, "12:00:00")

	t.Run("gives back the token and the request", func(t *testing.T) {
		t.Parallel()
		s := takeN(t, p, State{}, noon, 3)
		st := p.Status(p.Refund(s, noon), noon)
		if st.Tokens != 13 || st.DailyUsed != 2 {
			t.Errorf("%v tokens, %d used; want 13, 2", st.Tokens, st.DailyUsed)
		}
	})
	t.Run("a refunded token can be taken again", func(t *testing.T) {
		t.Parallel()
		s := takeN(t, p, State{}, noon, 15)
		if _, d := p.Take(s, noon); d.Allowed {
			t.Fatal("16th allowed")
		}
		s = takeN(t, p, p.Refund(s, noon), noon, 1)
		if _, d := p.Take(s, noon); d.Allowed || d.DailyUsed != 15 {
			t.Errorf("after refund and take: allowed %v, %d used; want refused, 15", d.Allowed, d.DailyUsed)
		}
	})
	t.Run("never above capacity nor below zero requests", func(t *testing.T) {
		t.Parallel()
		s := takeN(t, p, State{}, noon, 1)
		s = p.Refund(p.Refund(s, noon), noon)
		st := p.Status(s, noon)
		if st.Tokens != 15 || st.Remaining != 15 || st.DailyUsed != 0 || s.DayCount != 0 {
			t.Errorf("%+v from %+v; want 15 tokens, 15 remaining, 0 used", st, s)
		}
	})
	t.Run("a full bucket is left as it is", func(t *testing.T) {
		t.Parallel()
		if got := p.Refund(State{}, noon); !got.equal(State{}) {
			t.Errorf("new bucket refunded to %+v", got)
		}
		s := takeN(t, p, State{}, noon, 1)
		s.DayCount = 0
		if got := p.Refund(s, noon.Add(time.Hour)); !got.equal(s) {
			t.Errorf("refilled bucket refunded from %+v to %+v", s, got)
		}
	})
	t.Run("after midnight the new day's count is untouched", func(t *testing.T) {
		t.Parallel()
		s := takeN(t, p, State{}, at(t, "23:59:59"), 2)
		after := at(t, "00:00:01+1")
		st := p.Status(p.Refund(s, after), after)
		// 2 tokens taken 2s ago, one given back.
		want := 15 - float64(2*minute-2*time.Second)/float64(minute) + 1
		if st.DailyUsed != 0 || !near(st.Tokens, want) {
			t.Errorf("%d used, %v tokens; want 0, %v", st.DailyUsed, st.Tokens, want)
		}
	})
}

func TestPolicyValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		policy Policy
		ok     bool
	}{
		{"contract", contractPolicy(), true},
		{"no daily limit", Policy{Capacity: 1, RefillPerSecond: 1}, true},
		{"huge rate", Policy{Capacity: 15, RefillPerSecond: 1e12}, true},
		{"capacity below one", Policy{Capacity: 0.5, RefillPerSecond: 1}, false},
		{"capacity NaN", Policy{Capacity: math.NaN(), RefillPerSecond: 1}, false},
		{"capacity infinite", Policy{Capacity: math.Inf(1), RefillPerSecond: 1}, false},
		{"zero rate", Policy{Capacity: 15}, false},
		{"negative rate", Policy{Capacity: 15, RefillPerSecond: -1}, false},
		{"infinite rate", Policy{Capacity: 15, RefillPerSecond: math.Inf(1)}, false},
		{"rate too slow to represent", Policy{Capacity: 15, RefillPerSecond: 1e-12}, false},
		{"negative daily limit", Policy{Capacity: 15, RefillPerSecond: 1, DailyLimit: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.policy.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestDecisionErr(t *testing.T) {
	t.Parallel()
	p := Policy{Capacity: 1, RefillPerSecond: 1, DailyLimit: 5}
	noon := at(t, "12:00:00")
	s, d := p.Take(State{}, noon)
	if err := d.Err(); !d.Allowed || err != nil {
		t.Fatalf("first request: allowed %v, Err %v", d.Allowed, err)
	}
	_, d = p.Take(s, noon)
	err := d.Err()
	if !errors.Is(err, ErrLimited) {
		t.Fatalf("Err() = %v, want it to wrap ErrLimited", err)
	}
	var r *Refusal
	if !errors.As(err, &r) || r.Limit != Burst || r.RetryAfter != time.Second {
		t.Errorf("Err() = %#v, want a *Refusal by burst for 1s", err)
	}
	if got, want := err.Error(), "rate limited: burst limit, retry after 1s"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
