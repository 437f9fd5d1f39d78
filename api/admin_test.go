package main

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/gravitycar/tollgate/internal/budget"
	"github.com/gravitycar/tollgate/internal/pricing"
	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
)

func TestAdminUsage(t *testing.T) {
	t.Parallel()
	a := newTestAPIWith(t, nil, nil, func(s *settings) { s.AdminSubjects = []string{"root"} })

	// Some settled usage in the ledger, as the alerter would fold it.
	ledger := budget.NewLedger(a.budgetKV, pricing.Default(), nil, time.Now)
	now := time.Now()
	var evs []budget.Event
	for i, user := range []string{"alice", "bob", "alice"} {
		evs = append(evs, budget.Event{Seq: uint64(i + 1), Usage: queue.UsageEvent{
			RequestID: query.NewID(now), User: user, Model: "gpt-4o-mini", PromptTokens: 1000, CompletionTokens: 100, CompletedAt: now,
		}})
	}
	if err := ledger.Apply(t.Context(), evs); err != nil {
		t.Fatal(err)
	}

	if res := a.do(t, "GET", "/v1/admin/usage", a.token(t, "alice"), "", ""); res.status != http.StatusForbidden {
		t.Fatalf("non-admin: %d, want 403", res.status)
	} else {
		res.problem(t)
	}
	scoped, _ := a.issuer.Token("ops-bot", time.Hour, "tollgate:admin")
	for _, tok := range []string{a.token(t, "root"), scoped} {
		res := a.do(t, "GET", "/v1/admin/usage", tok, "", "")
		if res.status != http.StatusOK {
			t.Fatalf("admin: %d %s", res.status, res.body)
		}
		var u usageResponse
		if err := json.Unmarshal(res.body, &u); err != nil {
			t.Fatal(err)
		}
		cost, _ := pricing.Default().Cost("gpt-4o-mini", 1000, 0, 100)
		if u.Requests != 3 || u.SpentUSD != (3*cost).USD() || u.BudgetUSD != 1 || len(u.ByModel) != 1 || u.ByModel[0].Tokens.Prompt != 3000 {
			t.Fatalf("usage %+v", u)
		}
		if len(u.ByUser) != 2 || u.ByUser[0].User != "alice" || u.ByUser[0].Requests != 2 || u.ByUser[0].SpentUSD != (2*cost).USD() {
			t.Fatalf("by user %+v, want alice first with 2 requests", u.ByUser)
		}
	}
	if res := a.do(t, "GET", "/v1/admin/usage?day=yesterday", a.token(t, "root"), "", ""); res.status != http.StatusBadRequest {
		t.Fatalf("bad day: %d", res.status)
	}
	// /v1/me shows the user's spend.
	if m := me(t, a, "alice"); m.SpentTodayUSD <= 0 {
		t.Fatalf("alice's spend today: %+v", m)
	}
}
