package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/alert"
	"github.com/gravitycar/tollgate/internal/budget"
	"github.com/gravitycar/tollgate/internal/pricing"
)

// adminScope lets any token holder with it use the admin endpoints.
const adminScope = "tollgate:admin"

// requireAdmin lets through ADMIN_SUBJECTS and tokens with the admin scope;
// anyone else authenticated gets 403.
func requireAdmin(subjects []string) gin.HandlerFunc {
	return func(c *gin.Context) {
		p, _ := principal(c)
		if slices.Contains(subjects, p.Subject) || p.HasScope(adminScope) {
			c.Next()
			return
		}
		writeProblem(c, http.StatusForbidden, "forbidden", "admin endpoints need an admin subject or the "+adminScope+" scope", nil)
	}
}

// usage serves GET /v1/admin/usage: a day's ledger (today, or ?day=).
type usage struct {
	budgetKV jetstream.KeyValue
	alertsKV jetstream.KeyValue
	guard    *budget.Guard
	now      func() time.Time
}

type usageResponse struct {
	Day            string       `json:"day"`
	BudgetUSD      float64      `json:"budget_usd"`
	SpentUSD       float64      `json:"spent_usd"`
	ReservedUSD    float64      `json:"reserved_usd"`
	RemainingUSD   float64      `json:"remaining_usd"`
	PercentUsed    float64      `json:"percent_used"`
	Exhausted      bool         `json:"exhausted"`
	ExhaustedAt    *time.Time   `json:"exhausted_at,omitempty"`
	Requests       int          `json:"requests"`
	Tokens         tokenCounts  `json:"tokens"`
	UnpricedEvents int          `json:"unpriced_events"`
	ByModel        []modelLine  `json:"by_model"`
	ByUser         []userLine   `json:"by_user"`
	Alerts         []alertState `json:"alerts"`
	PricesAsOf     string       `json:"prices_as_of"`
}

type tokenCounts struct {
	Prompt       int64 `json:"prompt"`
	CachedPrompt int64 `json:"cached_prompt"`
	Completion   int64 `json:"completion"`
}

type modelLine struct {
	Model    string      `json:"model"`
	SpentUSD float64     `json:"spent_usd"`
	Requests int         `json:"requests"`
	Tokens   tokenCounts `json:"tokens"`
}

type userLine struct {
	User     string  `json:"user"`
	SpentUSD float64 `json:"spent_usd"`
	Requests int     `json:"requests"`
}

type alertState struct {
	Threshold float64    `json:"threshold"`
	Status    string     `json:"status"`
	Attempts  int        `json:"attempts"`
	LastError string     `json:"last_error,omitempty"`
	Permanent bool       `json:"permanent_failure"`
	ClaimedAt time.Time  `json:"claimed_at"`
	SentAt    *time.Time `json:"sent_at,omitempty"`
}

func (u *usage) get(c *gin.Context) {
	now := u.now()
	day := c.DefaultQuery("day", budget.Today(now))
	if _, err := time.Parse(time.DateOnly, day); err != nil {
		writeProblem(c, http.StatusBadRequest, "validation", "day must be YYYY-MM-DD", map[string]string{"day": "must be YYYY-MM-DD"})
		return
	}
	ctx := c.Request.Context()
	d, err := budget.ReadDay(ctx, u.budgetKV, day)
	if err != nil {
		u.unavailable(c, err)
		return
	}
	users, err := budget.Users(ctx, u.budgetKV, day)
	if err != nil {
		u.unavailable(c, err)
		return
	}
	alerts, err := u.alerts(ctx, day)
	if err != nil {
		u.unavailable(c, err)
		return
	}
	b := u.guard.Budget()
	reserved := d.Reserved(now)
	res := usageResponse{
		Day:            day,
		BudgetUSD:      b.USD(),
		SpentUSD:       d.Spent.USD(),
		ReservedUSD:    reserved.USD(),
		RemainingUSD:   max(b-d.Spent-reserved, 0).USD(),
		PercentUsed:    float64(d.Spent) / float64(b) * 100,
		Exhausted:      d.ExhaustedAt != nil,
		ExhaustedAt:    d.ExhaustedAt,
		Requests:       d.Totals.Requests,
		Tokens:         tokenCounts{d.Totals.PromptTokens, d.Totals.CachedPromptTokens, d.Totals.CompletionTokens},
		UnpricedEvents: d.Unpriced,
		ByModel:        []modelLine{},
		ByUser:         []userLine{},
		Alerts:         alerts,
		PricesAsOf:     pricing.PricesAsOf,
	}
	for _, m := range d.Models() {
		res.ByModel = append(res.ByModel, modelLine{
			Model: m.Model, SpentUSD: m.Spent.USD(), Requests: m.Requests,
			Tokens: tokenCounts{m.PromptTokens, m.CachedPromptTokens, m.CompletionTokens},
		})
	}
	for _, us := range users {
		res.ByUser = append(res.ByUser, userLine{User: us.User, SpentUSD: us.Spent.USD(), Requests: us.Requests})
	}
	c.JSON(http.StatusOK, res)
}

// alerts reads the day's alert records from the alerts bucket.
func (u *usage) alerts(ctx context.Context, day string) ([]alertState, error) {
	out := []alertState{}
	lister, err := u.alertsKV.ListKeysFiltered(ctx, day+".*")
	if err != nil {
		return nil, fmt.Errorf("listing alerts: %w", err)
	}
	for key := range lister.Keys() {
		e, err := u.alertsKV.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("reading alert %s: %w", key, err)
		}
		var st alert.State
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			return nil, fmt.Errorf("decoding alert %s: %w", key, err)
		}
		a := alertState{Threshold: st.Threshold, Status: string(st.Status), Attempts: st.Attempts,
			LastError: st.LastError, Permanent: st.Permanent, ClaimedAt: st.ClaimedAt}
		if !st.SentAt.IsZero() {
			a.SentAt = &st.SentAt
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b alertState) int { return int((a.Threshold - b.Threshold) * 1000) })
	return out, nil
}

func (u *usage) unavailable(c *gin.Context, err error) {
	reqLogger(c).Error("reading usage", "err", err)
	c.Error(err)
	retryAfter(c, 5*time.Second)
	writeProblem(c, http.StatusServiceUnavailable, "store-unavailable", "the ledger cannot be read right now; try again", nil)
}
