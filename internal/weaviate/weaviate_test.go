package weaviate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gravitycar/tollgate/internal/rag"
	"github.com/gravitycar/tollgate/internal/weaviatetest"
)

const dailyQuestion = "How many requests can I make per day?"

func TestNewCreatesCollection(t *testing.T) {
	t.Parallel()
	base := weaviatetest.Shared(t)
	ctx := testCtx(t)
	name := collectionFor(t)

	s := newStore(t, base, nil)
	if s.Collection() != name {
		t.Errorf("Collection() = %q, want %q", s.Collection(), name)
	}
	class, err := s.getClass(ctx)
	if err != nil || class == nil {
		t.Fatalf("collection %s after New: %v, %v", name, class, err)
	}
	props := make(map[string]string)
	for _, p := range class.Properties {
		props[p.Name] = p.Tokenization
	}
	want := map[string]string{"text": "word", "title": "word", "section": "word", "source": "field", "contentHash": "field"}
	for name, tok := range want {
		if props[name] != tok {
			t.Errorf("property %s: tokenization %q, want %q (properties: %v)", name, props[name], tok, props)
		}
	}
	if class.Vectorizer != "none" {
		t.Errorf("vectorizer %q, want none", class.Vectorizer)
	}

	// Again, with data in it: the collection and its objects stay.
	if added, _, err := s.Add(ctx, corpus(t)[:3]); err != nil || added != 3 {
		t.Fatalf("Add: %d, %v", added, err)
	}
	again := newStore(t, base, nil)
	if _, skipped, err := again.Add(ctx, corpus(t)[:3]); err != nil || skipped != 3 {
		t.Errorf("Add after a second New: skipped %d, %v; want the 3 chunks kept", skipped, err)
	}
}

// Several processes starting at once all create the same collection; all
// must succeed.
func TestNewConcurrent(t *testing.T) {
	t.Parallel()
	base := weaviatetest.Shared(t)
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = New(testCtx(t), Config{URL: base, Collection: collectionFor(t), HTTPClient: httpClient(t)})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent New: %v", err)
	}
}

func TestNewLowerCaseCollection(t *testing.T) {
	t.Parallel()
	base := weaviatetest.Shared(t)
	s := newStore(t, base, nil, "lowerFirst")
	if s.Collection() != "LowerFirst" {
		t.Errorf("Collection() = %q, want LowerFirst", s.Collection())
	}
	if _, err := s.Search(testCtx(t), "anything", 3); err != nil {
		t.Errorf("Search: %v", err)
	}
}

func TestNewRefusesForeignCollection(t *testing.T) {
	t.Parallel()
	base := weaviatetest.Shared(t)
	name := collectionFor(t)
	body := fmt.Sprintf(`{"class":%q,"vectorizer":"none","properties":[{"name":"body","dataType":["text"]}]}`, name)
	resp, err := httpClient(t).Post(base+"/v1/schema", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("creating %s: status %d", name, resp.StatusCode)
	}

	_, err = New(testCtx(t), Config{URL: base, Collection: name, HTTPClient: httpClient(t)})
	if err == nil || !strings.Contains(err.Error(), "without the properties text, title, source, section, contentHash") {
		t.Errorf("New on a collection of other properties: %v, want an error naming the missing ones", err)
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want string
		is   error
	}{
		{"no URL", Config{}, "want http:// or https://", nil},
		{"no scheme", Config{URL: "localhost:8080"}, "want http:// or https://", nil},
		{"with a path", Config{URL: "http://localhost:8080/weaviate"}, "scheme://host[:port] only", nil},
		{"bad collection", Config{URL: "http://127.0.0.1:1", Collection: "my-chunks"}, "want a letter then", nil},
		{"nobody listening", Config{URL: "http://127.0.0.1:1"}, "reading collection Chunk", ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.cfg.HTTPClient = httpClient(t)
			_, err := New(testCtx(t), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error containing %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("New: %v, want errors.Is %v", err, tt.is)
			}
		})
	}
}

func TestAddAndSearchBM25(t *testing.T) {
	t.Parallel()
	base := weaviatetest.Shared(t)
	ctx := testCtx(t)
	s := newStore(t, base, nil)
	chunks := corpus(t)

	added, skipped, err := s.Add(ctx, chunks)
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	if added != distinct(chunks) || added+skipped != len(chunks) {
		t.Errorf("Add: added %d, skipped %d; want %d added of %d", added, skipped, distinct(chunks), len(chunks))
	}

	passages, err := s.Search(ctx, dailyQuestion, 5)
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	if len(passages) == 0 || passages[0].Source != "rate-limits.md" {
		t.Fatalf("Search(%q): top passage %+v, want one from rate-limits.md", dailyQuestion, first(passages))
	}
	if !strings.Contains(passages[0].Text, "30 requests per day") {
		t.Errorf("top passage %q, want the daily request limit", passages[0].Text)
	}
	checkPassages(t, passages, chunks, 5)

	// Re-ingesting adds nothing.
	added, skipped, err = s.Add(ctx, chunks)
	if err != nil || added != 0 || skipped != len(chunks) {
		t.Errorf("second Add: added %d, skipped %d, %v; want 0 added, %d skipped", added, skipped, err, len(chunks))
	}
	again, err := s.Search(ctx, dailyQuestion, 5)
	if err != nil || len(again) != len(passages) || again[0].ID != passages[0].ID {
		t.Errorf("Search after re-ingesting: %d passages, %v; want the same %d", len(again), err, len(passages))
	}
}

// checkPassages checks the Search contract: at most k passages, best first,
// each one an ingested chunk with its content hash as ID, no repeats.
func checkPassages(t *testing.T, passages []rag.Passage, chunks []rag.Chunk, k int) {
	t.Helper()
	if len(passages) > k {
		t.Errorf("%d passages, want at most %d", len(passages), k)
	}
	byID := make(map[string]rag.Chunk)
	for _, c := range chunks {
		byID[c.ID] = c
	}
	seen := make(map[string]bool)
	for i, p := range passages {
		c, ok := byID[p.ID]
		if !ok {
			t.Errorf("passage %d: ID %q is not an ingested chunk's", i, p.ID)
			continue
		}
		if p.Text != c.Text || p.Title != c.Title || p.Section != c.Section || p.ID != rag.ChunkID(p.Text) {
			t.Errorf("passage %d = %+v, want chunk %+v", i, p, c)
		}
		if seen[p.ID] {
			t.Errorf("passage %d repeats %s", i, p.ID)
		}
		seen[p.ID] = true
		if p.Score <= 0 {
			t.Errorf("passage %d: score %v, want > 0", i, p.Score)
		}
		if i > 0 && p.Score > passages[i-1].Score {
			t.Errorf("passage %d scores %v, more than passage %d (%v)", i, p.Score, i-1, passages[i-1].Score)
		}
	}
}

func first(ps []rag.Passage) any {
	if len(ps) == 0 {
		return "none"
	}
	return ps[0]
}

func TestSearchEdgeCases(t *testing.T) {
	t.Parallel()
	base := weaviatetest.Shared(t)
	ctx := testCtx(t)
	s := newStore(t, base, nil)
	chunks := corpus(t)

	// An empty collection: no passages, no error.
	if got, err := s.Search(ctx, dailyQuestion, 5); err != nil || len(got) != 0 {
		t.Errorf("Search on an empty collection: %d passages, %v", len(got), err)
	}
	if _, _, err := s.Add(ctx, chunks); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		question string
		k        int
		want     int // passages, -1 = some
	}{
		{"blank question", " \n\t ", 5, 0},
		{"k 0 is the default", "token bucket", 0, rag.DefaultK},
		{"k 1", "token bucket", 1, 1},
		{"no word matches", "xylophone quetzal", 5, 0},
		{"quotes, braces and control characters", "\"token\" {bucket} \x07\x00\\ limits}", 3, -1},
		{"invalid UTF-8", "token \xff\xfe bucket", 3, -1},
		{"non-ASCII", "Größe des Buckets — token", 3, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := s.Search(ctx, tt.question, tt.k)
			if err != nil {
				t.Fatalf("Search(%q): %v", tt.question, err)
			}
			if tt.want >= 0 && len(got) != tt.want || tt.want < 0 && len(got) == 0 {
				t.Errorf("Search(%q, %d): %d passages, want %d", tt.question, tt.k, len(got), tt.want)
			}
			k := tt.k
			if k <= 0 {
				k = rag.DefaultK
			}
			checkPassages(t, got, chunks, k)
		})
	}
}

func TestHybridSearch(t *testing.T) {
	t.Parallel()
	base := weaviatetest.Shared(t)
	ctx := testCtx(t)
	var emb testEmbedder
	s := newStore(t, base, emb.Embed)
	chunks := corpus(t)

	added, _, err := s.Add(ctx, chunks)
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	if got := emb.texts.Load(); got != int64(added) {
		t.Errorf("embedded %d texts for %d new chunks", got, added)
	}

	// Every object has its vector.
	vec := objectVector(t, base, s.Collection(), chunks[0].ID)
	want, _ := emb.Embed(ctx, []string{embedText(chunks[0])})
	if !slices.Equal(vec, want[0]) {
		t.Errorf("stored vector of %s = %v, want %v", chunks[0].ID, vec, want[0])
	}

	passages, err := s.Search(ctx, dailyQuestion, 5)
	if err != nil {
		t.Fatalf("hybrid Search: %v", err)
	}
	for _, p := range passages {
		t.Logf("%.3f %s | %s", p.Score, p.Source, p.Section)
	}
	if len(passages) == 0 || passages[0].Source != "rate-limits.md" || !strings.Contains(passages[0].Text, "30 requests per day") {
		t.Fatalf("hybrid Search(%q): top passage %+v, want the daily limit in rate-limits.md", dailyQuestion, first(passages))
	}
	checkPassages(t, passages, chunks, 5)

	// "zorblax" is in no document, so BM25 finds nothing; its vector is
	// that of "thirty", which one passage holds: only the vector half of
	// the hybrid search can find it.
	bm25 := newStore(t, base, nil, s.Collection())
	if got, err := bm25.Search(ctx, "zorblax", 3); err != nil || len(got) != 0 {
		t.Fatalf("BM25 Search(zorblax): %d passages, %v; want none", len(got), err)
	}
	passages, err = s.Search(ctx, "zorblax", 3)
	if err != nil {
		t.Fatalf("hybrid Search(zorblax): %v", err)
	}
	if len(passages) == 0 || !strings.Contains(passages[0].Text, "thirty questions a day") {
		t.Errorf("hybrid Search(zorblax): top passage %+v, want the one saying thirty", first(passages))
	}

	// Re-ingesting embeds nothing.
	before := emb.texts.Load()
	if added, _, err := s.Add(ctx, chunks); err != nil || added != 0 {
		t.Errorf("second Add: added %d, %v", added, err)
	}
	if after := emb.texts.Load(); after != before {
		t.Errorf("second Add embedded %d texts, want 0", after-before)
	}
}

// objectVector reads the stored vector of the chunk with this content hash.
func objectVector(t *testing.T, base, class, contentHash string) []float32 {
	t.Helper()
	resp, err := httpClient(t).Get(fmt.Sprintf("%s/v1/objects/%s/%s?include=vector", base, class, ObjectID(contentHash)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var obj struct {
		Vector []float32 `json:"vector"`
	}
	if err := decodeJSON(resp, &obj); err != nil {
		t.Fatalf("reading object %s: %v", contentHash, err)
	}
	return obj.Vector
}

func TestAddErrors(t *testing.T) {
	t.Parallel()
	base := weaviatetest.Shared(t)
	ctx := testCtx(t)
	chunks := corpus(t)[:4]

	t.Run("embedder fails", func(t *testing.T) {
		boom := errors.New("boom")
		s := newStore(t, base, func(context.Context, []string) ([][]float32, error) { return nil, boom })
		if _, _, err := s.Add(ctx, chunks); !errors.Is(err, boom) {
			t.Errorf("Add: %v, want the embedder's error", err)
		}
		if _, err := s.Search(ctx, "token", 3); !errors.Is(err, boom) {
			t.Errorf("Search: %v, want the embedder's error", err)
		}
	})
	t.Run("embedder returns too few vectors", func(t *testing.T) {
		s := newStore(t, base, func(_ context.Context, texts []string) ([][]float32, error) {
			return [][]float32{{1, 2}}, nil
		})
		if _, _, err := s.Add(ctx, chunks); err == nil || !strings.Contains(err.Error(), "got 1 vectors for 4 texts") {
			t.Errorf("Add: %v", err)
		}
	})
	t.Run("vectors of another length than the stored ones", func(t *testing.T) {
		var emb testEmbedder
		s := newStore(t, base, emb.Embed)
		if _, _, err := s.Add(ctx, chunks[:2]); err != nil {
			t.Fatal(err)
		}
		other := newStore(t, base, func(_ context.Context, texts []string) ([][]float32, error) {
			out := make([][]float32, len(texts))
			for i := range out {
				out[i] = []float32{1, 0, 0}
			}
			return out, nil
		}, s.Collection())
		added, _, err := other.Add(ctx, chunks[2:])
		if err == nil || added != 0 {
			t.Errorf("Add with 3-dimensional vectors into a 64-dimensional collection: added %d, %v; want an error", added, err)
		}
		t.Logf("error: %v", err)
	})
	t.Run("duplicates within one call", func(t *testing.T) {
		s := newStore(t, base, nil)
		dup := append(slices.Clone(chunks), chunks[0], chunks[1])
		noID := chunks[2]
		noID.ID = ""
		dup = append(dup, noID)
		added, skipped, err := s.Add(ctx, dup)
		if err != nil || added != len(chunks) || skipped != 3 {
			t.Errorf("Add: added %d, skipped %d, %v; want %d added, 3 skipped", added, skipped, err, len(chunks))
		}
	})
}

// Two processes ingesting the same corpus at once store each chunk once.
func TestAddConcurrent(t *testing.T) {
	t.Parallel()
	base := weaviatetest.Shared(t)
	ctx := testCtx(t)
	chunks := corpus(t)
	a := newStore(t, base, nil)
	b := newStore(t, base, nil)

	var wg sync.WaitGroup
	var errA, errB error
	wg.Go(func() { _, _, errA = a.Add(ctx, chunks) })
	wg.Go(func() { _, _, errB = b.Add(ctx, chunks) })
	wg.Wait()
	if err := errors.Join(errA, errB); err != nil {
		t.Fatalf("concurrent Add: %v", err)
	}
	if n := countObjects(t, base, a.Collection()); n != distinct(chunks) {
		t.Errorf("%d objects after two concurrent Adds, want %d", n, distinct(chunks))
	}
	// Searches from many goroutines at once.
	for range 8 {
		wg.Go(func() {
			if _, err := a.Search(ctx, dailyQuestion, 3); err != nil {
				t.Errorf("Search: %v", err)
			}
		})
	}
	wg.Wait()
}

// countObjects counts a collection's objects with a GraphQL Aggregate.
func countObjects(t *testing.T, base, class string) int {
	t.Helper()
	q := fmt.Sprintf(`{"query":"{Aggregate{%s{meta{count}}}}"}`, class)
	resp, err := httpClient(t).Post(base+"/v1/graphql", "application/json", strings.NewReader(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Aggregate map[string][]struct {
				Meta struct {
					Count int `json:"count"`
				} `json:"meta"`
			} `json:"Aggregate"`
		} `json:"data"`
	}
	if err := decodeJSON(resp, &out); err != nil || len(out.Data.Aggregate[class]) != 1 {
		t.Fatalf("counting %s: %v %+v", class, err, out)
	}
	return out.Data.Aggregate[class][0].Meta.Count
}

// faultyProxy is a reverse proxy to Weaviate that answers the first
// requests to each of its paths (GraphQL by default) itself, with an error
// status, and records the requests to those paths.
type faultyProxy struct {
	URL    string
	status int
	paths  []string

	mu        sync.Mutex
	failFirst int            // requests to fail on each path
	seen      map[string]int // requests received, by path
	bodies    []string       // bodies received, in order
}

func startFaultyProxy(t *testing.T, target string, status int, paths ...string) *faultyProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	rp.Transport = tr
	if len(paths) == 0 {
		paths = []string{"/v1/graphql"}
	}
	p := &faultyProxy{status: status, paths: paths, seen: make(map[string]int)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slices.Contains(p.paths, r.URL.Path) {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			p.mu.Lock()
			p.seen[r.URL.Path]++
			p.bodies = append(p.bodies, string(body))
			fail := p.seen[r.URL.Path] <= p.failFirst
			p.mu.Unlock()
			if fail {
				if p.status == http.StatusTooManyRequests {
					w.Header().Set("Retry-After", "0")
				}
				http.Error(w, `{"error":[{"message":"injected by the test"}]}`, p.status)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.Close()
		tr.CloseIdleConnections()
	})
	p.URL = srv.URL
	return p
}

// failing makes the proxy fail the first n requests to each path from now on.
func (p *faultyProxy) failing(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failFirst = n
	clear(p.seen)
	p.bodies = nil
}

// requests returns the number of requests to path since failing was called.
func (p *faultyProxy) requests(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen[path]
}

func (p *faultyProxy) body(i int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i >= len(p.bodies) {
		return ""
	}
	return p.bodies[i]
}

func TestRetries(t *testing.T) {
	t.Parallel()
	base := weaviatetest.Shared(t)
	ctx := testCtx(t)
	chunks := corpus(t)
	direct := newStore(t, base, nil)
	if _, _, err := direct.Add(ctx, chunks); err != nil {
		t.Fatal(err)
	}

	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusInternalServerError} {
		t.Run(fmt.Sprintf("%d then success", status), func(t *testing.T) {
			t.Parallel()
			p := startFaultyProxy(t, base, status)
			s := newStore(t, p.URL, nil, direct.Collection())
			p.failing(3)
			passages, err := s.Search(ctx, dailyQuestion, 5)
			if err != nil {
				t.Fatalf("Search through 3 × %d: %v", status, err)
			}
			if len(passages) == 0 || passages[0].Source != "rate-limits.md" {
				t.Errorf("top passage %+v, want rate-limits.md", first(passages))
			}
			if n := p.requests("/v1/graphql"); n != 4 {
				t.Errorf("%d GraphQL requests, want 4 (3 failures, 1 success)", n)
			}
			// Each attempt sent the same query.
			if b0, b3 := p.body(0), p.body(3); b0 != b3 || b0 == "" {
				t.Errorf("retried with another body:\n%v\n%v", b0, b3)
			}
		})
	}

	t.Run("ingestion retries too", func(t *testing.T) {
		t.Parallel()
		p := startFaultyProxy(t, base, http.StatusServiceUnavailable, "/v1/graphql", "/v1/batch/objects")
		s := newStore(t, p.URL, nil)
		p.failing(2)
		added, _, err := s.Add(ctx, chunks)
		if err != nil || added != distinct(chunks) {
			t.Errorf("Add through 2 × 503 on lookups and imports: added %d, %v", added, err)
		}
		if n := p.requests("/v1/batch/objects"); n != 3 {
			t.Errorf("%d imports, want 3 (2 failures, 1 success)", n)
		}
		if n := p.requests("/v1/graphql"); n != 3 {
			t.Errorf("%d lookups, want 3 (2 failures, 1 success)", n)
		}
	})

	t.Run("400 is not retried", func(t *testing.T) {
		t.Parallel()
		p := startFaultyProxy(t, base, http.StatusBadRequest)
		s := newStore(t, p.URL, nil, direct.Collection())
		p.failing(1 << 30)
		_, err := s.Search(ctx, dailyQuestion, 5)
		if err == nil || errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "status code: 400") ||
			!strings.Contains(err.Error(), "injected by the test") {
			t.Errorf("Search through a 400: %v, want the 400 error, not ErrUnavailable", err)
		}
		if n := p.requests("/v1/graphql"); n != 1 {
			t.Errorf("%d GraphQL requests, want 1", n)
		}
	})

	t.Run("503 every time", func(t *testing.T) {
		t.Parallel()
		p := startFaultyProxy(t, base, http.StatusServiceUnavailable)
		s := newStore(t, p.URL, nil, direct.Collection())
		p.failing(1 << 30)
		_, err := s.Search(ctx, dailyQuestion, 5)
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "status code: 503") {
			t.Errorf("Search through endless 503s: %v, want ErrUnavailable with the 503", err)
		}
		if n := p.requests("/v1/graphql"); n != defaultBackoff.attempts {
			t.Errorf("%d GraphQL requests, want %d", n, defaultBackoff.attempts)
		}
	})

	// A wait that would end after the deadline is not started (the
	// transport's tests check that); what is left when it passes is
	// ErrUnavailable.
	t.Run("503 until the deadline", func(t *testing.T) {
		t.Parallel()
		p := startFaultyProxy(t, base, http.StatusServiceUnavailable)
		s := newStore(t, p.URL, nil, direct.Collection())
		p.failing(1 << 30)
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err := s.Search(short, dailyQuestion, 5)
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("Search through endless 503s with a deadline: %v, want ErrUnavailable", err)
		}
		if n := p.requests("/v1/graphql"); n >= defaultBackoff.attempts {
			t.Errorf("%d GraphQL requests, want fewer than %d: the deadline stops the retries", n, defaultBackoff.attempts)
		}
	})
}

func TestReady(t *testing.T) {
	t.Parallel()
	base := weaviatetest.Shared(t)
	ctx := testCtx(t)
	s := newStore(t, base, nil)
	if err := s.Ready(ctx); err != nil {
		t.Errorf("Ready: %v", err)
	}

	// Readiness is answered at once: a 503 is not retried.
	var calls atomic.Int64
	unready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(unready.Close)
	s.readyURL = unready.URL + "/v1/.well-known/ready"
	if err := s.Ready(ctx); !errors.Is(err, ErrUnavailable) || calls.Load() != 1 {
		t.Errorf("Ready against a 503: %v after %d calls, want ErrUnavailable after 1", err, calls.Load())
	}
	unready.Close()
	if err := s.Ready(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Ready with nobody listening: %v, want ErrUnavailable", err)
	}
}

func TestAPIKeyIsSent(t *testing.T) {
	t.Parallel()
	base := weaviatetest.Shared(t)
	var mu sync.Mutex
	auth := map[string]bool{}
	target, _ := url.Parse(base)
	rp := httputil.NewSingleHostReverseProxy(target)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	rp.Transport = tr
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth[r.Header.Get("Authorization")] = true
		mu.Unlock()
		r.Header.Del("Authorization") // the test server allows anonymous access only
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { proxy.Close(); tr.CloseIdleConnections() })

	ctx := testCtx(t)
	s, err := New(ctx, Config{URL: proxy.URL, APIKey: "s3cret", Collection: collectionFor(t), HTTPClient: httpClient(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Search(ctx, "token", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(auth) != 1 || !auth["Bearer s3cret"] {
		t.Errorf("Authorization headers seen: %v, want only Bearer s3cret", auth)
	}
}

func decodeJSON(resp *http.Response, v any) error {
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return json.Unmarshal(body, v)
}

// More chunks than one batch holds go in several batches, each looked up,
// imported and counted.
func TestAddManyBatches(t *testing.T) {
	t.Parallel()
	base := weaviatetest.Shared(t)
	ctx := testCtx(t)
	var emb testEmbedder
	s := newStore(t, base, emb.Embed)
	chunks := make([]rag.Chunk, 2*batchSize+37)
	for i := range chunks {
		text := fmt.Sprintf("Synthetic paragraph %d about topic %d.", i, i%7)
		chunks[i] = rag.Chunk{ID: rag.ChunkID(text), Title: "Synthetic", Source: "synthetic.md", Text: text}
	}
	if added, skipped, err := s.Add(ctx, chunks[:batchSize+10]); err != nil || added != batchSize+10 || skipped != 0 {
		t.Fatalf("first Add: added %d, skipped %d, %v", added, skipped, err)
	}
	added, skipped, err := s.Add(ctx, chunks)
	if err != nil || added != len(chunks)-(batchSize+10) || skipped != batchSize+10 {
		t.Errorf("second Add: added %d, skipped %d, %v; want %d, %d", added, skipped, err, len(chunks)-(batchSize+10), batchSize+10)
	}
	if got := emb.texts.Load(); got != int64(len(chunks)) {
		t.Errorf("embedded %d texts, want each of the %d chunks once", got, len(chunks))
	}
	if n := countObjects(t, base, s.Collection()); n != len(chunks) {
		t.Errorf("%d objects, want %d", n, len(chunks))
	}
	// One rare word: "paragraph 123" would not do, as in Weaviate 1.35.2 a
	// limited BM25 search drops objects not yet flushed from the memtable
	// when a common word fills the top k first (weaviate/weaviate#11780).
	passages, err := newStore(t, base, nil, s.Collection()).Search(ctx, "123", 3)
	if err != nil || len(passages) == 0 || !strings.Contains(passages[0].Text, "paragraph 123 ") {
		t.Errorf("Search(123): %+v, %v", first(passages), err)
	}
}
