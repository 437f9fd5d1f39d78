package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/gravitycar/tollgate/internal/budget"
	"github.com/gravitycar/tollgate/internal/llm"
	"github.com/gravitycar/tollgate/internal/pricing"
	"github.com/gravitycar/tollgate/internal/ratelimit"
)

// metering is what an admission costs: a reservation of the query's
// worst-case price against the daily budget, and a token from the user's
// rate limit. Either can refuse; a refusal after one was taken gives it back.
type metering struct {
	policy    ratelimit.Policy
	limiter   *ratelimit.Limiter
	guard     *budget.Guard
	price     pricing.Price // of OPENAI_MODEL
	maxTokens int           // OPENAI_MAX_TOKENS
	holdFor   time.Duration // a reservation lapses with the query (QUERY_TTL)
	now       func() time.Time
}

// worstCase bounds what answering question with k passages can cost.
func (m *metering) worstCase(question string, k int) pricing.Nanos {
	prompt := int64(llm.PromptTokenBound(question, k))
	num := prompt*int64(m.price.Input) + int64(m.maxTokens)*int64(m.price.Output)
	return pricing.Nanos((num + 999_999) / 1_000_000)
}

// errRateLimited carries a rate-limit refusal to the handler.
type errRateLimited struct{ decision ratelimit.Decision }

func (e *errRateLimited) Error() string { return e.decision.Err().Error() }

// admit reserves the budget then takes a rate-limit token for the query id,
// in the order of the original service. It returns the decision (for the
// RateLimit headers) and a release function that undoes both, for a query
// that is refused or fails to be queued later.
func (m *metering) admit(ctx context.Context, id, user, question string, k int) (ratelimit.Decision, func(), error) {
	if err := m.guard.Reserve(ctx, id, m.worstCase(question, k), m.holdFor); err != nil {
		return ratelimit.Decision{}, nil, err
	}
	releaseHold := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = m.guard.Release(ctx, id) // a hold that stays lapses with the query anyway
	}
	d, err := m.limiter.Take(ctx, user)
	if err != nil {
		releaseHold()
		return d, nil, err
	}
	if !d.Allowed {
		releaseHold()
		return d, nil, &errRateLimited{decision: d}
	}
	release := func() {
		releaseHold()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = m.limiter.Refund(ctx, user)
	}
	return d, release, nil
}

// rateHeaders sets the RateLimit-* headers (draft-ietf-httpapi-ratelimit-headers).
func rateHeaders(c *gin.Context, s ratelimit.Status) {
	c.Header("RateLimit-Limit", strconv.Itoa(int(s.Capacity)))
	c.Header("RateLimit-Remaining", strconv.Itoa(s.Remaining))
	c.Header("RateLimit-Reset", strconv.FormatInt(ceilSeconds(s.Reset), 10))
}

func ceilSeconds(d time.Duration) int64 {
	return int64(math.Ceil(d.Seconds()))
}

// withRateHeaders gives every authenticated response the caller's current
// RateLimit-* headers; a submit replaces them with the state after its
// decision. If the limiter cannot be read the headers are left out rather
// than failing a read-only request.
func (m *metering) withRateHeaders(c *gin.Context) {
	if p, ok := principal(c); ok {
		type result struct {
			s   ratelimit.Status
			err error
		}
		r := offStack(func() result {
			ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
			defer cancel()
			s, err := m.limiter.Status(ctx, p.Subject)
			return result{s, err}
		})
		s, err := r.s, r.err
		if err == nil {
			rateHeaders(c, s)
		} else {
			reqLogger(c).Warn("reading rate limit state", "err", err)
		}
	}
	c.Next()
}

// refuse answers a refused admission.
func (m *metering) refuse(c *gin.Context, err error) {
	var limited *errRateLimited
	switch {
	case errors.As(err, &limited):
		d := limited.decision
		rateHeaders(c, d.Status)
		retryAfter(c, d.RetryAfter)
		what := fmt.Sprintf("the burst limit of %d requests (a token refills every %d s)",
			int(m.policy.Capacity), ceilSeconds(time.Duration(float64(time.Second)/m.policy.RefillPerSecond)))
		if d.Limit == ratelimit.Daily {
			what = fmt.Sprintf("the daily limit of %d requests (it resets at midnight UTC)", d.DailyLimit)
		}
		writeProblem(c, http.StatusTooManyRequests, "rate-limited-"+string(d.Limit),
			fmt.Sprintf("you have reached %s; retry after %d s", what, ceilSeconds(d.RetryAfter)), nil)
	case errors.Is(err, budget.ErrExhausted):
		retryAfter(c, budget.UntilMidnight(m.now()))
		writeProblem(c, http.StatusServiceUnavailable, "budget-exhausted",
			"today's spending budget is used up; new questions are accepted again after midnight UTC", nil)
	default:
		// Fail closed: nothing goes through unmetered.
		reqLogger(c).Error("metering unavailable", "err", err)
		c.Error(err)
		retryAfter(c, 5*time.Second)
		writeProblem(c, http.StatusServiceUnavailable, "metering-unavailable",
			"rate limits and budget cannot be checked right now, so nothing is accepted; try again shortly", nil)
	}
}

// meResponse is GET /v1/me.
type meResponse struct {
	User            string  `json:"user"`
	TokensLeft      int     `json:"tokens_left"`
	Capacity        float64 `json:"capacity"`
	RefillPerMinute float64 `json:"refill_per_minute"`
	DailyUsed       int     `json:"daily_used"`
	DailyLimit      int     `json:"daily_limit"`
	NextTokenAt     *string `json:"next_token_at"` // null when the bucket is full
	DayResetsAt     string  `json:"day_resets_at"`
	SpentTodayUSD   float64 `json:"spent_today_usd"`
}

// me handles GET /v1/me: the caller's limits and spend today.
func (m *metering) me(c *gin.Context) {
	p, _ := principal(c)
	ctx := c.Request.Context()
	s, err := m.limiter.Status(ctx, p.Subject)
	if err != nil {
		m.refuse(c, err)
		return
	}
	spent, err := m.guard.UserSpent(ctx, p.Subject)
	if err != nil {
		m.refuse(c, err)
		return
	}
	res := meResponse{
		User:            p.Subject,
		TokensLeft:      int(math.Floor(s.Tokens)),
		Capacity:        s.Capacity,
		RefillPerMinute: math.Round(m.policy.RefillPerSecond*60*1e6) / 1e6,
		DailyUsed:       s.DailyUsed,
		DailyLimit:      s.DailyLimit,
		DayResetsAt:     s.DayResetsAt.UTC().Format(time.RFC3339),
		SpentTodayUSD:   spent.USD(),
	}
	if !s.NextTokenAt.IsZero() {
		next := s.NextTokenAt.UTC().Format(time.RFC3339)
		res.NextTokenAt = &next
	}
	c.JSON(http.StatusOK, res)
}
