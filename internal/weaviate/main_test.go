package weaviate

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gravitycar/tollgate/internal/rag"
	"github.com/gravitycar/tollgate/internal/weaviatetest"
)

// corpusDir is the sample corpus shipped with the repository.
const corpusDir = "../../samples/corpus"

// The tests share one weaviate-server (weaviatetest.Shared), each with a
// collection of its own.
func TestMain(m *testing.M) {
	// bleve (imported through rag) starts its analysis workers when it loads.
	ignore := []goleak.Option{
		goleak.IgnoreCurrent(),
		// The client sets a finalizer on each connection that sends on an
		// unbuffered channel nobody reads (weaviate-go-client v4.16.1,
		// connection/rest.go): once a Store is garbage collected, the
		// runtime's finalizer goroutine blocks there for good. Tests make
		// many Stores; a process should make one.
		goleak.IgnoreTopFunction("github.com/weaviate/weaviate-go-client/v4/weaviate/connection.finalizer"),
	}
	code := weaviatetest.Main(m)
	if code == 0 {
		// Every test closes its own HTTP connections; nothing may be left.
		if err := goleak.Find(ignore...); err != nil {
			_, _ = os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

// testCtx returns a context that ends with the test, or after a minute.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// httpClient returns a client with a transport of its own, whose
// connections are closed when the test ends (for goleak).
func httpClient(t testing.TB) *http.Client {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

var notName = regexp.MustCompile(`[^A-Za-z0-9_]+`)

// collections numbers the collections tests make, so that each is new
// also when tests run more than once on one server (go test -count).
var collections atomic.Int64

// collectionFor returns a collection name of the test's own. Calls from
// one test return the same name.
func collectionFor(t testing.TB) string {
	t.Helper()
	names.Lock()
	defer names.Unlock()
	if name, ok := names.m[t]; ok {
		return name
	}
	name := fmt.Sprintf("T%d_%s", collections.Add(1), notName.ReplaceAllString(t.Name(), "_"))
	names.m[t] = name
	t.Cleanup(func() {
		names.Lock()
		delete(names.m, t)
		names.Unlock()
	})
	return name
}

var names = struct {
	sync.Mutex
	m map[testing.TB]string
}{m: make(map[testing.TB]string)}

// newStore connects a Store to url with a collection of the test's own
// (or collection, if given) and the embedder embed (nil = BM25).
func newStore(t testing.TB, url string, embed func(context.Context, []string) ([][]float32, error), collection ...string) *Store {
	t.Helper()
	name := collectionFor(t)
	if len(collection) > 0 {
		name = collection[0]
	}
	s, err := New(testCtx(t), Config{URL: url, Collection: name, Embed: embed, HTTPClient: httpClient(t)})
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	return s
}

// corpus returns the sample corpus split into chunks, as ingestion does.
func corpus(t testing.TB) []rag.Chunk {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(corpusDir, "*.md"))
	if err != nil || len(files) < 6 {
		t.Fatalf("sample corpus: %d files, %v", len(files), err)
	}
	var chunks []rag.Chunk
	for _, f := range files {
		content, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, rag.Split(filepath.Base(f), content, 0)...)
	}
	return chunks
}

// distinct counts the distinct content hashes among chunks.
func distinct(chunks []rag.Chunk) int {
	ids := make(map[string]bool)
	for _, c := range chunks {
		ids[c.ID] = true
	}
	return len(ids)
}

// testDims is the length of testEmbedder's vectors.
const testDims = 64

// testEmbedder is a deterministic embedding function: a hashed bag of
// words (lower-cased, stop words left out, FNV-1a into 63 buckets) with
// one dimension, the last, kept for the word "thirty" and its made-up
// synonym "zorblax", so that a question can match a passage by vector
// alone. Vectors are normalised, with a small constant so that none is
// zero. It counts the texts it embeds.
type testEmbedder struct{ texts atomic.Int64 }

var testStopWords = func() map[string]bool {
	m := make(map[string]bool)
	for _, w := range stopWords() {
		m[w] = true
	}
	return m
}()

func (e *testEmbedder) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e.texts.Add(int64(len(texts)))
	out := make([][]float32, len(texts))
	for i, text := range texts {
		v := make([]float32, testDims)
		v[0] = 0.01
		for _, w := range strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
			return !('a' <= r && r <= 'z' || '0' <= r && r <= '9')
		}) {
			if testStopWords[w] {
				continue
			}
			if w == "thirty" || w == "zorblax" {
				v[testDims-1]++
				continue
			}
			h := fnv.New32a()
			_, _ = h.Write([]byte(w))
			v[h.Sum32()%(testDims-1)]++
		}
		var norm float64
		for _, x := range v {
			norm += float64(x) * float64(x)
		}
		for j := range v {
			v[j] /= float32(math.Sqrt(norm))
		}
		out[i] = v
	}
	return out, nil
}
