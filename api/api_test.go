package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/auth"
	"github.com/gravitycar/tollgate/internal/natstest"
	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
)

// testAPI is the api's router over a real nats-server, with a real JWKS
// served over HTTP for a key the test signs with.
type testAPI struct {
	srv    *httptest.Server // long-polls and streams are detached (detach.go)
	plain  *httptest.Server // the same api behind a writer that cannot be hijacked
	nc     *nats.Conn
	js     jetstream.JetStream
	issuer *auth.Issuer
	store  *query.Store
	pub    *failingPublisher
	meter  *metering

	budgetKV jetstream.KeyValue
	hub      *hub
	detached *detached
}

// held is the api as served where connections cannot be hijacked (HTTP/2,
// wrapping middleware): waiters stay on their request's goroutine.
func (a *testAPI) held() *testAPI {
	b := *a
	b.srv = a.plain
	return &b
}

// unhijackable hides the connection's Hijacker.
type unhijackable struct{ http.ResponseWriter }

func (w unhijackable) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

// failingPublisher is the real JetStream publisher, which a test can make
// fail to see what the api does when the queue is down.
type failingPublisher struct {
	Publisher
	fail bool
}

func (p *failingPublisher) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if p.fail {
		return nil, nats.ErrNoResponders
	}
	return p.Publisher.PublishMsg(ctx, msg, opts...)
}

// testSettings are the defaults of the contract, with dev auth values.
func testSettings() settings {
	s, err := loadSettings(func(k string) string {
		return map[string]string{"AUTH_MODE": "dev"}[k]
	})
	if err != nil {
		panic(err)
	}
	return s
}

func newTestAPI(t *testing.T) *testAPI {
	return newTestAPIWith(t, nil, nil, nil)
}

// newTestAPIWith starts an api on nc (a new nats-server when nil) trusting
// issuer (a new one when nil), with settings changed by adjust.
func newTestAPIWith(t *testing.T, nc *nats.Conn, issuer *auth.Issuer, adjust func(*settings)) *testAPI {
	t.Helper()
	ctx := t.Context()
	if nc == nil {
		nc = natstest.Start(t)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s := testSettings()
	if adjust != nil {
		adjust(&s)
	}
	layout := queue.Layout{QueryTTL: s.QueryTTL}
	if err := queue.EnsureStreams(ctx, js, layout, queue.QueriesStream); err != nil {
		t.Fatal(err)
	}
	kvs, err := queue.EnsureBuckets(ctx, js, layout, queue.QueriesBucket, queue.RateLimitBucket, queue.BudgetBucket, queue.AlertsBucket, queue.IdempotencyBucket)
	if err != nil {
		t.Fatal(err)
	}

	if issuer == nil {
		if issuer, err = auth.LoadOrCreateIssuer(t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(issuer.JWKS())
	}))
	t.Cleanup(jwks.Close)
	bg, cancel := context.WithCancel(context.Background())
	verifier, err := auth.NewVerifier(bg, auth.Options{
		JWKSURL: jwks.URL, Issuer: auth.DevIssuer, Audience: auth.DevAudience, CacheTTL: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	meter, err := newMetering(s, kvs, logger, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	h := newHub(logger)
	var bgDone sync.WaitGroup
	bgDone.Go(func() { meter.guard.Run(bg) })
	bgDone.Go(func() { h.run(bg, kvs[queue.QueriesBucket]) })
	t.Cleanup(func() { cancel(); bgDone.Wait() })
	<-meter.guard.Ready()
	<-h.ready

	pub := &failingPublisher{Publisher: js}
	detached := newDetached()
	store := query.NewStore(kvs[queue.QueriesBucket])
	m := newMetrics()
	router := newRouter(routerDeps{
		logger:   logger,
		metrics:  m,
		verifier: verifier,
		queries: &queries{meter: meter, idem: &idempotency{kv: kvs[queue.IdempotencyBucket]}, hub: h, syncWait: s.SyncWait,
			store: store, js: pub, now: time.Now, maxChars: s.MaxQuestionChars, metrics: m,
			detached: detached, heartbeat: s.heartbeat},
		corsOrigins: s.CORSOrigins,
		ready:       func(context.Context) error { return nil },
		admins:      s.AdminSubjects,
		usage:       &usage{budgetKV: kvs[queue.BudgetBucket], alertsKV: kvs[queue.AlertsBucket], guard: meter.guard, now: time.Now},
	})
	checked := validateContract(t, router) // every exchange is checked against openapi.json
	srv := httptest.NewServer(checked)
	t.Cleanup(srv.Close)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		checked.ServeHTTP(unhijackable{w}, r)
	}))
	t.Cleanup(plain.Close)
	t.Cleanup(detached.shutdown) // before the contract check: it ends the detached waiters
	return &testAPI{srv: srv, plain: plain, detached: detached, nc: nc, js: js, issuer: issuer, store: store, pub: pub, meter: meter, budgetKV: kvs[queue.BudgetBucket], hub: h}
}

func (a *testAPI) token(t *testing.T, user string) string {
	t.Helper()
	tok, err := a.issuer.Token(user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type response struct {
	status int
	header http.Header
	body   []byte
	close  bool // the server ended the connection with the response ("Connection: close")
}

func (r response) problem(t *testing.T) problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json (body %s)", ct, r.body)
	}
	var p problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem body %s: %v", r.body, err)
	}
	if p.Status != r.status || p.Title == "" || !strings.HasPrefix(p.Type, "urn:tollgate:problem:") {
		t.Fatalf("malformed problem %+v for status %d", p, r.status)
	}
	return p
}

func (a *testAPI) do(t *testing.T, method, path, token, contentType, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, a.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := a.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.Header.Get("X-Request-Id") == "" {
		t.Errorf("%s %s: no X-Request-Id", method, path)
	}
	return response{status: res.StatusCode, header: res.Header, body: b, close: res.Close}
}

func (a *testAPI) queued(t *testing.T) uint64 {
	t.Helper()
	s, err := a.js.Stream(t.Context(), queue.QueriesStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestSubmitAccepted(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	res := a.do(t, "POST", "/v1/queries", a.token(t, "auth0|alice"), "application/json; charset=utf-8",
		`{"question":"  How many requests per day?  ","k":3}`)
	if res.status != http.StatusAccepted {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	var acc acceptedResponse
	if err := json.Unmarshal(res.body, &acc); err != nil {
		t.Fatal(err)
	}
	if acc.Status != query.Queued || acc.Links.Self != "/v1/queries/"+acc.ID || acc.Links.Events != acc.Links.Self+"/events" {
		t.Fatalf("accepted body %+v", acc)
	}
	if loc := res.header.Get("Location"); loc != acc.Links.Self {
		t.Fatalf("Location = %q, want %q", loc, acc.Links.Self)
	}

	// The question is on the queue, with the id as Nats-Msg-Id, before the 202.
	s, _ := a.js.Stream(t.Context(), queue.QueriesStream)
	raw, err := s.GetLastMsgForSubject(t.Context(), queue.QueriesSubject)
	if err != nil {
		t.Fatal(err)
	}
	if got := raw.Header.Get(jetstream.MsgIDHeader); got != acc.ID {
		t.Fatalf("Nats-Msg-Id = %q, want %q", got, acc.ID)
	}
	var sub queue.Submission
	if err := json.Unmarshal(raw.Data, &sub); err != nil {
		t.Fatal(err)
	}
	if sub.ID != acc.ID || sub.User != "auth0|alice" || sub.Question != "How many requests per day?" || sub.K != 3 {
		t.Fatalf("submission %+v", sub)
	}

	// The owner reads it back; the record does not show the owner field.
	got := a.do(t, "GET", "/v1/queries/"+acc.ID, a.token(t, "auth0|alice"), "", "")
	if got.status != http.StatusOK {
		t.Fatalf("owner GET: %d %s", got.status, got.body)
	}
	var rec map[string]any
	json.Unmarshal(got.body, &rec)
	if rec["status"] != "queued" || rec["question"] != "How many requests per day?" || rec["k"] != 3.0 {
		t.Fatalf("record %s", got.body)
	}
	if _, ok := rec["user"]; ok {
		t.Fatalf("record shows its owner: %s", got.body)
	}

	// Anyone else, and unknown ids, get 404 (never 403).
	for _, tc := range []struct{ user, id string }{
		{"bob", acc.ID},
		{"auth0|alice", query.NewID(time.Now())},
		{"auth0|alice", "not-an-id"},
	} {
		res := a.do(t, "GET", "/v1/queries/"+tc.id, a.token(t, tc.user), "", "")
		if res.status != http.StatusNotFound {
			t.Errorf("GET %s as %s: %d, want 404", tc.id, tc.user, res.status)
		}
		res.problem(t)
	}
}

func TestSubmitDefaultK(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	res := a.do(t, "POST", "/v1/queries", a.token(t, "alice"), "application/json", `{"question":"hi"}`)
	if res.status != http.StatusAccepted {
		t.Fatalf("status %d: %s", res.status, res.body)
	}
	var acc acceptedResponse
	json.Unmarshal(res.body, &acc)
	rec, _, err := a.store.Get(t.Context(), acc.ID)
	if err != nil || rec.K != 5 || rec.User != "alice" {
		t.Fatalf("record %+v, %v; want k=5 owned by alice", rec, err)
	}
}

func TestSubmitRefusals(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	tok := a.token(t, "alice")
	long := strings.Repeat("é", 2001)
	tests := []struct {
		name        string
		token       string
		contentType string
		body        string
		status      int
		field       string // expected key in errors, for 400 validation
		detail      string // expected substring of detail
	}{
		{"no token", "", "application/json", `{"question":"q"}`, 401, "", "missing"},
		{"garbage token", "abc", "application/json", `{"question":"q"}`, 401, "", ""},
		{"text body", tok, "text/plain", `{"question":"q"}`, 415, "", "Content-Type"},
		{"no content type", tok, "", `{"question":"q"}`, 415, "", ""},
		{"form body", tok, "application/x-www-form-urlencoded", `question=q`, 415, "", ""},
		{"too large", tok, "application/json", `{"question":"` + strings.Repeat("a", 17<<10) + `"}`, 413, "", "16384"},
		{"malformed json", tok, "application/json", `{"question":`, 400, "", "malformed JSON"},
		{"syntax error", tok, "application/json", `{"question" "q"}`, 400, "", "byte"},
		{"empty body", tok, "application/json", ``, 400, "", "empty"},
		{"two values", tok, "application/json", `{"question":"q"} {}`, 400, "", "more than one"},
		{"array", tok, "application/json", `["q"]`, 400, "", ""},
		{"missing question", tok, "application/json", `{"k":3}`, 400, "question", ""},
		{"blank question", tok, "application/json", `{"question":"   \n\t "}`, 400, "question", ""},
		{"question too long", tok, "application/json", `{"question":"` + long + `"}`, 400, "question", ""},
		{"question not string", tok, "application/json", `{"question":42}`, 400, "question", ""},
		{"k zero", tok, "application/json", `{"question":"q","k":0}`, 400, "k", ""},
		{"k too big", tok, "application/json", `{"question":"q","k":21}`, 400, "k", ""},
		{"k not int", tok, "application/json", `{"question":"q","k":"five"}`, 400, "k", ""},
		{"k fraction", tok, "application/json", `{"question":"q","k":2.5}`, 400, "k", ""},
		{"unknown field", tok, "application/json", `{"question":"q","model":"gpt-4"}`, 400, "model", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := a.do(t, "POST", "/v1/queries", tt.token, tt.contentType, tt.body)
			if res.status != tt.status {
				t.Fatalf("status %d, want %d: %s", res.status, tt.status, res.body)
			}
			p := res.problem(t)
			if tt.field != "" && p.Errors[tt.field] == "" {
				t.Errorf("errors %v, want a message for %q", p.Errors, tt.field)
			}
			if !strings.Contains(p.Detail, tt.detail) {
				t.Errorf("detail %q, want it to mention %q", p.Detail, tt.detail)
			}
			if tt.status == 401 && !strings.HasPrefix(res.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %q", res.header.Get("WWW-Authenticate"))
			}
		})
	}
	if n := a.queued(t); n != 0 {
		t.Fatalf("%d messages queued by refused requests, want 0", n)
	}
}

func TestSubmitQueueDown(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	a.pub.fail = true
	res := a.do(t, "POST", "/v1/queries", a.token(t, "alice"), "application/json", `{"question":"q"}`)
	if res.status != http.StatusServiceUnavailable || res.header.Get("Retry-After") == "" {
		t.Fatalf("status %d (Retry-After %q), want 503 with Retry-After", res.status, res.header.Get("Retry-After"))
	}
	res.problem(t)
	if n := a.queued(t); n != 0 {
		t.Fatalf("%d messages queued, want 0", n)
	}
	// The record that was written first is marked failed, not left queued.
	kv, _ := a.js.KeyValue(t.Context(), queue.QueriesBucket)
	keys, err := kv.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for id := range keys.Keys() {
		n++
		rec, _, err := a.store.Get(t.Context(), id)
		if err != nil || rec.Status != query.Failed || rec.Error == nil || rec.Error.Code != query.CodeQueueUnavailable {
			t.Fatalf("record after failed publish: %+v, %v", rec, err)
		}
	}
	if n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
}

func TestAuthFailuresAreProblems(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	other, err := auth.LoadOrCreateIssuer(t.TempDir()) // a key the JWKS does not have
	if err != nil {
		t.Fatal(err)
	}
	wrongKey, _ := other.Token("alice", time.Hour)
	expired, _ := a.issuer.Token("alice", -time.Hour)
	for name, header := range map[string]string{
		"none":         "",
		"basic":        "Basic YWxpY2U6cHc=",
		"empty bearer": "Bearer ",
		"wrong key":    "Bearer " + wrongKey,
		"expired":      "Bearer " + expired,
	} {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", a.srv.URL+"/v1/queries/"+query.NewID(time.Now()), nil)
			if header != "" {
				req.Header.Set("Authorization", header)
			}
			res, err := a.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			r := response{status: res.StatusCode, header: res.Header, body: b}
			if r.status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", r.status)
			}
			r.problem(t)
			if ch := res.Header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, `Bearer realm="tollgate"`) {
				t.Fatalf("WWW-Authenticate = %q", ch)
			}
		})
	}
}

func TestHealthAndUnknownRoutes(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	for _, path := range []string{"/health", "/healthz", "/readyz"} {
		if res := a.do(t, "GET", path, "", "", ""); res.status != http.StatusOK {
			t.Errorf("GET %s: %d", path, res.status)
		}
	}
	res := a.do(t, "GET", "/metrics", "", "", "")
	if res.status != http.StatusOK || !strings.Contains(string(res.body), "tollgate_http_requests_total") {
		t.Errorf("GET /metrics: %d", res.status)
	}
	res = a.do(t, "GET", "/nope", "", "", "")
	if res.status != http.StatusNotFound {
		t.Errorf("GET /nope: %d", res.status)
	}
	res.problem(t)
}

func TestDevModeRefusesNonLoopback(t *testing.T) {
	t.Parallel()
	for addr, ok := range map[string]bool{
		"127.0.0.1:8080": true, "localhost:8080": true, "[::1]:8080": true,
		":8080": false, "0.0.0.0:8080": false, "192.168.1.10:8080": false,
	} {
		env := map[string]string{"AUTH_MODE": "dev", "HTTP_ADDR": addr}
		_, err := loadSettings(func(k string) string { return env[k] })
		if (err == nil) != ok {
			t.Errorf("AUTH_MODE=dev HTTP_ADDR=%s: err = %v", addr, err)
		}
		if err != nil && !strings.Contains(err.Error(), "HTTP_ADDR") {
			t.Errorf("error %q does not name HTTP_ADDR", err)
		}
	}
}

func TestJWKSModeRequiresSettings(t *testing.T) {
	t.Parallel()
	_, err := loadSettings(func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "AUTH_JWKS_URL") {
		t.Fatalf("err = %v, want AUTH_JWKS_URL required", err)
	}
}
