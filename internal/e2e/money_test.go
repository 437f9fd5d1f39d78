package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gravitycar/tollgate/internal/budget"
	"github.com/gravitycar/tollgate/internal/pricing"
	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
	"github.com/gravitycar/tollgate/internal/smtptest"
)

// TestBudgetIsHardAndTheOwnerIsTold runs two api replicas, a worker and the
// alerter against a budget of a few queries' worst case: 200 concurrent
// submits never take spend past the budget, refusals are 503 with
// Retry-After, every reservation is settled, the ledger agrees with the
// stream, and the owner gets the 80% and 100% emails exactly once, even
// though the mail server was down when the budget ran out.
func TestBudgetIsHardAndTheOwnerIsTold(t *testing.T) {
	mail := smtptest.Start(t)
	mail.Stop() // down at the crossing

	s := startSystem(t, map[string]string{
		"DAILY_BUDGET_USD":         "0.02",
		"TOKEN_BUCKET_CAPACITY":    "1000",
		"DAILY_USER_REQUEST_LIMIT": "0",
		"SMTP_HOST":                mail.Host,
		"SMTP_PORT":                strconv.Itoa(mail.Port),
		"SMTP_TLS":                 "none",
		"ALERT_EMAIL":              "owner@example.com",
	})
	second := start(t, "api", s.env)
	secondURL := "http://" + second.waitLog("listening", time.Minute)["addr"].(string)
	alerter := start(t, "alerter", s.env)
	alerter.waitLog("alerter started", time.Minute)

	var mu sync.Mutex
	statuses := map[int]int{}
	accepted := map[string]string{} // id → token
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range 200 {
		wg.Go(func() {
			<-gate
			user := fmt.Sprintf("user%d", i%7)
			tok := s.token(t, user)
			url := s.apiURL
			if i%2 == 1 {
				url = secondURL
			}
			req, _ := http.NewRequest("POST", url+"/v1/queries", strings.NewReader(`{"question":"What happens when the budget runs out?"}`))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer res.Body.Close()
			var body struct{ ID, Type string }
			json.NewDecoder(res.Body).Decode(&body)
			mu.Lock()
			defer mu.Unlock()
			statuses[res.StatusCode]++
			switch res.StatusCode {
			case http.StatusAccepted:
				accepted[body.ID] = tok
			case http.StatusServiceUnavailable:
				if body.Type != "urn:tollgate:problem:budget-exhausted" || res.Header.Get("Retry-After") == "" {
					t.Errorf("503 %q with Retry-After %q", body.Type, res.Header.Get("Retry-After"))
				}
			default:
				t.Errorf("status %d", res.StatusCode)
			}
		})
	}
	close(gate)
	wg.Wait()
	if statuses[202] == 0 || statuses[503] == 0 || statuses[202]+statuses[503] != 200 {
		t.Fatalf("statuses %v: want some accepted and the rest refused for budget", statuses)
	}
	for id, tok := range accepted {
		if rec := s.waitFinished(t, id, tok, time.Minute); rec.Status != query.Succeeded {
			t.Fatalf("query %s: %s %+v", id, rec.Status, rec.Error)
		}
	}

	// Every reservation is settled into real spend, within the budget.
	kv, err := s.js.KeyValue(t.Context(), queue.BudgetBucket)
	if err != nil {
		t.Fatal(err)
	}
	today := budget.Today(time.Now())
	limit, _ := pricing.ParseUSD("0.02")
	var day budget.Day
	waitUntil(t, time.Minute, func() bool {
		day, err = budget.ReadDay(t.Context(), kv, today)
		return err == nil && day.Totals.Requests == len(accepted) && len(day.Holds) == 0
	})
	if day.Spent <= 0 || day.Spent > limit || day.ExhaustedAt == nil {
		t.Fatalf("day ledger: spent %v (budget %v), exhausted %v", day.Spent, limit, day.ExhaustedAt)
	}

	// The mail server comes back: the two alerts arrive, once each.
	mail.Restart()
	waitUntil(t, 2*time.Minute, func() bool { return len(mail.Messages()) >= 2 })
	msgs := mail.Messages()
	subjects := []string{msgs[0].Subject, msgs[1].Subject}
	if len(msgs) != 2 || !strings.Contains(strings.Join(subjects, "|"), "80%") || !strings.Contains(strings.Join(subjects, "|"), "100%") {
		t.Fatalf("emails %q, want one for 80%% and one for 100%%", subjects)
	}
	for _, m := range msgs {
		if m.To != "owner@example.com" || !strings.Contains(m.Data, "$0.02") {
			t.Errorf("email to %s does not state the $0.02 budget:\n%s", m.To, m.Data)
		}
	}

	// The admin view shows the ledger and both alerts as sent.
	admin, _ := s.issuer.Token("ops", time.Hour, "tollgate:admin")
	var usage struct {
		SpentUSD    float64 `json:"spent_usd"`
		ReservedUSD float64 `json:"reserved_usd"`
		Exhausted   bool
		Alerts      []struct {
			Threshold float64
			Status    string
			Attempts  int
		}
	}
	waitUntil(t, time.Minute, func() bool {
		status, body := s.call(t, "GET", "/v1/admin/usage", admin, "")
		json.Unmarshal(body, &usage)
		return status == http.StatusOK && len(usage.Alerts) == 2 && usage.Alerts[0].Status == "sent" && usage.Alerts[1].Status == "sent"
	})
	if usage.SpentUSD != day.Spent.USD() || usage.ReservedUSD != 0 || !usage.Exhausted || usage.Alerts[1].Attempts < 2 {
		t.Fatalf("admin usage %+v: want the ledger's spend, nothing reserved, and the alerts retried while SMTP was down", usage)
	}

	// A rebuild from the stream agrees with the ledger.
	out := runToEnd(t, "alerter", s.env, "rebuild", "--day", today)
	if !strings.Contains(out, "0 differences") {
		t.Fatalf("rebuild:\n%s", out)
	}
}

func waitUntil(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
