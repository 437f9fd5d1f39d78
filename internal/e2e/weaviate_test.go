package e2e

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/weaviatetest"
)

// TestAnswersFromWeaviate runs the pipeline with WEAVIATE_URL set: ingest
// into a real weaviate-server (twice: the second run adds nothing), a
// worker retrieving from it, a question answered from the right passage.
func TestAnswersFromWeaviate(t *testing.T) {
	url := weaviatetest.Start(t)
	extra := map[string]string{"WEAVIATE_URL": url, "WEAVIATE_COLLECTION": "E2EChunk"}
	s := startSystemWith(t, extra, false)

	corpus := filepath.Join(repoRoot(), "samples", "corpus")
	out := runToEnd(t, "worker", s.env, "ingest", corpus)
	if !strings.Contains(out, "Weaviate") || !strings.Contains(out, "0 already there") {
		t.Fatalf("first ingest:\n%s", out)
	}
	out = runToEnd(t, "worker", s.env, "ingest", corpus)
	if !strings.Contains(out, "(0 new,") {
		t.Fatalf("second ingest added chunks:\n%s", out)
	}
	s.startProcesses(t)

	tok := s.token(t, "alice")
	status, body := s.call(t, "POST", "/v1/queries", tok, `{"question":"How many requests can I make per day?","k":3}`)
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", status, body)
	}
	var acc struct{ ID string }
	json.Unmarshal(body, &acc)
	rec := s.waitFinished(t, acc.ID, tok, time.Minute)
	if rec.Status != query.Succeeded || len(rec.Sources) == 0 || rec.Sources[0].Source != "rate-limits.md" {
		t.Fatalf("record %+v", rec)
	}
}
