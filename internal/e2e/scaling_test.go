package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
)

// slowModel is an OpenAI-compatible endpoint that takes a while to answer.
func slowModel(t *testing.T, latency time.Duration) (url string, calls *atomic.Int64) {
	t.Helper()
	calls = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"From the documents [1]."}}],
			"usage":{"prompt_tokens":420,"completion_tokens":8}}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v1", calls
}

// TestWorkersScaleAndStopCleanly: two worker processes share the queue;
// one is stopped with SIGTERM while questions are in flight; every
// question is answered exactly once, with one usage event each.
func TestWorkersScaleAndStopCleanly(t *testing.T) {
	modelURL, calls := slowModel(t, 300*time.Millisecond)
	s := startSystem(t, map[string]string{
		"OPENAI_API_KEY":           "test-key",
		"OPENAI_BASE_URL":          modelURL,
		"WORKER_CONCURRENCY":       "3",
		"TOKEN_BUCKET_CAPACITY":    "100",
		"DAILY_USER_REQUEST_LIMIT": "0",
		"ANSWER_CACHE_TTL":         "0",
	})
	env := map[string]string{}
	for k, v := range s.env {
		env[k] = v
	}
	second := start(t, "worker", env)
	second.waitLog("worker ready", time.Minute)

	const n = 30
	tok := s.token(t, "alice")
	var ids []string
	for i := range n {
		status, body := s.call(t, "POST", "/v1/queries", tok, fmt.Sprintf(`{"question":"Question number %d about rate limits?"}`, i))
		if status != http.StatusAccepted {
			t.Fatalf("submit %d: %d %s", i, status, body)
		}
		var acc struct{ ID string }
		json.Unmarshal(body, &acc)
		ids = append(ids, acc.ID)
	}
	waitUntil(t, time.Minute, func() bool { return calls.Load() >= 6 }) // both busy
	if err := s.worker.stop(time.Minute); err != nil {
		t.Fatalf("stopping the first worker: %v", err)
	}
	s.worker.waitLog("stopped fetching; waiting for in-flight questions", time.Second)

	for _, id := range ids {
		if rec := s.waitFinished(t, id, tok, 2*time.Minute); rec.Status != query.Succeeded {
			t.Fatalf("query %s: %s %+v", id, rec.Status, rec.Error)
		}
	}
	stream, _ := s.js.Stream(t.Context(), queue.UsageStream)
	info, _ := stream.Info(t.Context())
	if info.State.Msgs != n {
		t.Fatalf("%d usage events for %d questions", info.State.Msgs, n)
	}
	seen := map[string]bool{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		var ev queue.UsageEvent
		json.Unmarshal(m.Data, &ev)
		if seen[ev.RequestID] || ev.PromptTokens != 420 {
			t.Fatalf("usage event %+v (duplicate: %v)", ev, seen[ev.RequestID])
		}
		seen[ev.RequestID] = true
	}
	t.Logf("%d model calls for %d questions", calls.Load(), n)
}
