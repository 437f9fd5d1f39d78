package main

import (
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/gravitycar/tollgate/internal/budget"
	"github.com/gravitycar/tollgate/internal/natstest"
	"github.com/gravitycar/tollgate/internal/pricing"
)

const submitBody = `{"question":"How many requests can I make per day?"}`

// burst submits n questions as user at once, spread over the apis, and
// counts the statuses.
func burst(t *testing.T, apis []*testAPI, user string, n int) map[int]int {
	t.Helper()
	tok := apis[0].token(t, user)
	var mu sync.Mutex
	counts := map[int]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			res := apis[i%len(apis)].do(t, "POST", "/v1/queries", tok, "application/json", submitBody)
			switch res.status {
			case http.StatusAccepted:
			case http.StatusTooManyRequests:
				if res.header.Get("Retry-After") == "" {
					t.Error("429 without Retry-After")
				}
				res.problem(t)
			default:
				t.Errorf("status %d: %s", res.status, res.body)
			}
			if res.header.Get("RateLimit-Remaining") == "" {
				t.Errorf("status %d without RateLimit-Remaining", res.status)
			}
			mu.Lock()
			counts[res.status]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return counts
}

func twoReplicas(t *testing.T, adjust func(*settings)) []*testAPI {
	t.Helper()
	nc := natstest.Start(t)
	a := newTestAPIWith(t, nc, nil, adjust)
	b := newTestAPIWith(t, nc, a.issuer, adjust)
	return []*testAPI{a, b}
}

func TestBurstLimitExactAcrossReplicas(t *testing.T) {
	t.Parallel()
	apis := twoReplicas(t, func(s *settings) { s.RateLimit.DailyLimit = 1000 })
	counts := burst(t, apis, "auth0|alice", 100)
	if counts[202] != 15 || counts[429] != 85 {
		t.Fatalf("statuses %v, want exactly 15 accepted and 85 refused", counts)
	}
	if n := apis[0].queued(t); n != 15 {
		t.Fatalf("%d questions queued, want 15", n)
	}
	// Another user is not affected.
	if c := burst(t, apis, "bob@example.com", 3); c[202] != 3 {
		t.Fatalf("bob: %v", c)
	}
}

func TestDailyLimitExactAcrossReplicas(t *testing.T) {
	t.Parallel()
	apis := twoReplicas(t, func(s *settings) { s.RateLimit.DailyLimit = 3 })
	counts := burst(t, apis, "carol", 20)
	if counts[202] != 3 || counts[429] != 17 {
		t.Fatalf("statuses %v, want exactly 3 accepted", counts)
	}
	res := apis[1].do(t, "POST", "/v1/queries", apis[1].token(t, "carol"), "application/json", submitBody)
	p := res.problem(t)
	if p.Type != "urn:tollgate:problem:rate-limited-daily" {
		t.Fatalf("problem type %q, want the daily limit", p.Type)
	}
	wait, _ := strconv.Atoi(res.header.Get("Retry-After"))
	if want := budget.UntilMidnight(time.Now()); time.Duration(wait)*time.Second < want-5*time.Second || time.Duration(wait)*time.Second > want+5*time.Second {
		t.Fatalf("Retry-After %ds, want about %v (midnight UTC)", wait, want)
	}
}

func me(t *testing.T, a *testAPI, user string) meResponse {
	t.Helper()
	res := a.do(t, "GET", "/v1/me", a.token(t, user), "", "")
	if res.status != http.StatusOK {
		t.Fatalf("GET /v1/me: %d %s", res.status, res.body)
	}
	var m meResponse
	if err := json.Unmarshal(res.body, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRefusedRequestsCostNothing(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	tok := a.token(t, "dave")
	if m := me(t, a, "dave"); m.TokensLeft != 15 || m.DailyUsed != 0 || m.NextTokenAt != nil {
		t.Fatalf("fresh user: %+v", m)
	}
	// Malformed requests take no token.
	for _, body := range []string{`{"question":""}`, `{`, `{"k":99,"question":"q"}`} {
		if res := a.do(t, "POST", "/v1/queries", tok, "application/json", body); res.status != 400 {
			t.Fatalf("%s: %d", body, res.status)
		}
	}
	if res := a.do(t, "POST", "/v1/queries", tok, "text/plain", "q"); res.status != 415 {
		t.Fatal(res.status)
	}
	if m := me(t, a, "dave"); m.TokensLeft != 15 || m.DailyUsed != 0 {
		t.Fatalf("after malformed requests: %+v", m)
	}
	// A request refused after admission (the queue is down) gives the
	// token and the reservation back.
	a.pub.fail = true
	if res := a.do(t, "POST", "/v1/queries", tok, "application/json", submitBody); res.status != 503 {
		t.Fatal(res.status)
	}
	a.pub.fail = false
	if m := me(t, a, "dave"); m.TokensLeft != 15 || m.DailyUsed != 0 {
		t.Fatalf("after a failed publish: %+v", m)
	}
	// The guard sees the release through its watch of the day.
	waitFor(t, func() bool { return a.meter.guard.Today().Reserved == 0 })
	// An accepted one costs one token and one daily request, and holds a
	// reservation until it settles.
	res := a.do(t, "POST", "/v1/queries", tok, "application/json", submitBody)
	if res.status != 202 || res.header.Get("RateLimit-Remaining") != "14" || res.header.Get("RateLimit-Limit") != "15" {
		t.Fatalf("accepted: %d, headers %v", res.status, res.header)
	}
	m := me(t, a, "dave")
	if m.TokensLeft != 14 || m.DailyUsed != 1 || m.DailyLimit != 30 || m.Capacity != 15 || m.NextTokenAt == nil || m.RefillPerMinute < 0.99 {
		t.Fatalf("after one request: %+v", m)
	}
	if _, err := time.Parse(time.RFC3339, m.DayResetsAt); err != nil {
		t.Fatalf("day_resets_at %q: %v", m.DayResetsAt, err)
	}
	waitFor(t, func() bool { return a.meter.guard.Today().Reserved > 0 })
}

func TestBudgetRefusesBeforeRateLimit(t *testing.T) {
	t.Parallel()
	var hold pricing.Nanos
	a := newTestAPIWith(t, nil, nil, func(s *settings) {
		m := &metering{price: mustPrice(t, s.Model), maxTokens: s.MaxTokens}
		hold = m.worstCase("How many requests can I make per day?", 5)
		s.DailyBudget = 2*hold + hold/2 // room for two reservations
	})
	tok := a.token(t, "erin")
	for i := range 2 {
		if res := a.do(t, "POST", "/v1/queries", tok, "application/json", submitBody); res.status != 202 {
			t.Fatalf("request %d: %d %s", i, res.status, res.body)
		}
	}
	res := a.do(t, "POST", "/v1/queries", tok, "application/json", submitBody)
	if res.status != http.StatusServiceUnavailable || res.problem(t).Type != "urn:tollgate:problem:budget-exhausted" {
		t.Fatalf("third request: %d %s", res.status, res.body)
	}
	wait, _ := strconv.Atoi(res.header.Get("Retry-After"))
	if want := budget.UntilMidnight(time.Now()); time.Duration(wait)*time.Second < want-5*time.Second {
		t.Fatalf("Retry-After %d s, want until midnight UTC (%v)", wait, want)
	}
	if m := me(t, a, "erin"); m.DailyUsed != 2 || m.TokensLeft != 13 {
		t.Fatalf("a budget refusal took a token: %+v", m)
	}
	waitFor(t, func() bool { return a.meter.guard.Today().Exhausted })
}

func TestMeteringFailsClosedAndRecovers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := natstest.StartServerAt(t, dir, -1)
	port := srv.Addr().(*net.TCPAddr).Port
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	a := newTestAPIWith(t, nc, nil, nil)
	tok := a.token(t, "frank")
	if res := a.do(t, "POST", "/v1/queries", tok, "application/json", submitBody); res.status != 202 {
		t.Fatalf("before outage: %d", res.status)
	}

	srv.Shutdown()
	srv.WaitForShutdown()
	res := a.do(t, "POST", "/v1/queries", tok, "application/json", submitBody)
	if res.status != http.StatusServiceUnavailable || res.header.Get("Retry-After") == "" {
		t.Fatalf("with NATS down: %d %s, want 503 (fail closed)", res.status, res.body)
	}
	res.problem(t)

	natstest.StartServerAt(t, dir, port) // NATS is back

	waitFor(t, func() bool {
		return a.do(t, "POST", "/v1/queries", tok, "application/json", submitBody).status == http.StatusAccepted
	})
}

func mustPrice(t *testing.T, model string) pricing.Price {
	t.Helper()
	p, err := pricing.Default().Price(model)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
