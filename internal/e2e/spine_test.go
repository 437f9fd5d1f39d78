package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/auth"
	"github.com/gravitycar/tollgate/internal/natstest"
	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
)

// system is a running Tollgate: real nats-server, JWKS over HTTP, api and
// worker processes.
type system struct {
	js     jetstream.JetStream
	issuer *auth.Issuer
	env    map[string]string
	apiURL string
	api    *proc
	worker *proc
}

func startSystem(t *testing.T, extra map[string]string) *system {
	t.Helper()
	return startSystemWith(t, extra, true)
}

// startSystemWith prepares a system; with run it also ingests the sample
// corpus into the embedded index and starts a worker and an api.
func startSystemWith(t *testing.T, extra map[string]string, run bool) *system {
	t.Helper()
	nc := natstest.Start(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := auth.LoadOrCreateIssuer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(issuer.JWKS())
	}))
	t.Cleanup(jwks.Close)

	env := map[string]string{
		"NATS_URL":           nc.ConnectedUrl(),
		"DATA_DIR":           t.TempDir(),
		"HTTP_ADDR":          "127.0.0.1:0",
		"METRICS_ADDR":       "127.0.0.1:0",
		"AUTH_JWKS_URL":      jwks.URL,
		"AUTH_ISSUER":        auth.DevIssuer,
		"AUTH_AUDIENCE":      auth.DevAudience,
		"WORKER_CONCURRENCY": "4",
	}
	for k, v := range extra {
		env[k] = v
	}
	s := &system{js: js, issuer: issuer, env: env}
	if !run {
		return s
	}
	out := runToEnd(t, "worker", env, "ingest", filepath.Join(repoRoot(), "samples", "corpus"))
	if !strings.Contains(out, "ingested") {
		t.Fatalf("ingest printed no summary:\n%s", out)
	}
	s.startProcesses(t)
	return s
}

// startProcesses starts a worker and an api and waits until they are ready.
func (s *system) startProcesses(t *testing.T) {
	t.Helper()
	s.worker = start(t, "worker", s.env)
	s.worker.waitLog("worker ready", time.Minute)
	s.api = start(t, "api", s.env)
	s.apiURL = "http://" + s.api.waitLog("listening", time.Minute)["addr"].(string)
}

func (s *system) token(t *testing.T, user string) string {
	t.Helper()
	tok, err := s.issuer.Token(user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (s *system) call(t *testing.T, method, path, token, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, s.apiURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, b
}

// waitFinished polls the record until it is succeeded or failed.
func (s *system) waitFinished(t *testing.T, id, token string, timeout time.Duration) query.Record {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		status, body := s.call(t, "GET", "/v1/queries/"+id, token, "")
		if status != http.StatusOK {
			t.Fatalf("GET /v1/queries/%s: %d %s", id, status, body)
		}
		var rec query.Record
		if err := json.Unmarshal(body, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Status.Final() {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("query %s still %s after %s", id, rec.Status, timeout)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, as a frontend would
	}
}

func TestQuestionToAnswer(t *testing.T) {
	s := startSystem(t, nil)
	alice := s.token(t, "auth0|alice")

	status, body := s.call(t, "POST", "/v1/queries", alice, `{"question":"How many requests can I make per day?","k":3}`)
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", status, body)
	}
	var acc struct{ ID string }
	json.Unmarshal(body, &acc)

	rec := s.waitFinished(t, acc.ID, alice, time.Minute)
	if rec.Status != query.Succeeded {
		t.Fatalf("query ended %s: %+v", rec.Status, rec.Error)
	}
	if rec.Answer == "" || len(rec.Sources) == 0 || len(rec.Sources) > 3 {
		t.Fatalf("answer %q with %d sources", rec.Answer, len(rec.Sources))
	}
	if !strings.Contains(rec.Answer, "30") {
		t.Errorf("answer does not give the daily limit of 30: %q", rec.Answer)
	}
	for _, src := range rec.Sources {
		if src.ID == "" || src.Source == "" || src.Snippet == "" {
			t.Errorf("incomplete source %+v", src)
		}
	}
	if u := rec.Usage; u == nil || u.Model != "offline" || !u.Simulated || u.PricedAs != "gpt-4o-mini" ||
		u.PromptTokens <= 0 || u.CompletionTokens <= 0 || u.CostUSD <= 0 {
		t.Fatalf("usage %+v, want offline tokens priced as gpt-4o-mini", rec.Usage)
	}
	if rec.StartedAt == nil || rec.CompletedAt == nil || rec.CompletedAt.Before(*rec.StartedAt) {
		t.Errorf("timestamps started=%v completed=%v", rec.StartedAt, rec.CompletedAt)
	}

	// The usage event is on USAGE, once, under the request id.
	stream, err := s.js.Stream(t.Context(), queue.UsageStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(t.Context(), queue.UsageSubject)
	if err != nil {
		t.Fatal(err)
	}
	var ev queue.UsageEvent
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if msg.Header.Get(jetstream.MsgIDHeader) != acc.ID || ev.RequestID != acc.ID || ev.User != "auth0|alice" ||
		ev.Model != "gpt-4o-mini" || !ev.Simulated || ev.PromptTokens != rec.Usage.PromptTokens || ev.CompletionTokens != rec.Usage.CompletionTokens {
		t.Fatalf("usage event %+v (msg id %q) does not match record usage %+v", ev, msg.Header.Get(jetstream.MsgIDHeader), rec.Usage)
	}
	info, _ := stream.Info(t.Context())
	if info.State.Msgs != 1 {
		t.Fatalf("%d usage events, want 1", info.State.Msgs)
	}

	// The question has left the work queue.
	qs, _ := s.js.Stream(t.Context(), queue.QueriesStream)
	if qinfo, _ := qs.Info(t.Context()); qinfo.State.Msgs != 0 {
		t.Fatalf("%d questions left on the queue", qinfo.State.Msgs)
	}

	// Another user cannot see it.
	if status, _ := s.call(t, "GET", "/v1/queries/"+acc.ID, s.token(t, "bob"), ""); status != http.StatusNotFound {
		t.Fatalf("bob reading alice's query: %d, want 404", status)
	}

	// Both processes stop cleanly on SIGTERM.
	for _, p := range []*proc{s.api, s.worker} {
		if err := p.stop(30 * time.Second); err != nil {
			t.Errorf("%s: %v", p.name, err)
		}
	}
}

func TestManyQuestionsAllAnswered(t *testing.T) {
	s := startSystem(t, nil)
	const n = 20
	ids := make(map[string]string, n)
	for i := range n {
		user := fmt.Sprintf("user%d@example.com", i%3)
		tok := s.token(t, user)
		status, body := s.call(t, "POST", "/v1/queries", tok, fmt.Sprintf(`{"question":"What happens at 80%% of the budget? (%d)"}`, i))
		if status != http.StatusAccepted {
			t.Fatalf("submit %d: %d %s", i, status, body)
		}
		var acc struct{ ID string }
		json.Unmarshal(body, &acc)
		ids[acc.ID] = tok
	}
	for id, tok := range ids {
		if rec := s.waitFinished(t, id, tok, time.Minute); rec.Status != query.Succeeded {
			t.Fatalf("query %s ended %s: %+v", id, rec.Status, rec.Error)
		}
	}
	stream, _ := s.js.Stream(t.Context(), queue.UsageStream)
	if info, _ := stream.Info(t.Context()); info.State.Msgs != n {
		t.Fatalf("%d usage events for %d queries", info.State.Msgs, n)
	}
}
