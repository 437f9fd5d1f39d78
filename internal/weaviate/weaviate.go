// Package weaviate retrieves passages from a Weaviate collection, the
// production alternative to the embedded index in package rag. A [Store]
// creates its collection if it is missing, imports chunks idempotently by
// content hash, and searches with BM25, or with hybrid search (BM25 and
// vectors) when it is given an embedding function.
//
// Requests that Weaviate answers with 429 or a 5xx status are retried with
// exponential backoff and jitter within the context's deadline; errors that
// remain because Weaviate is unreachable or overloaded wrap [ErrUnavailable].
package weaviate

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/blevesearch/bleve/v2/analysis/lang/en"
	wv "github.com/weaviate/weaviate-go-client/v4/weaviate"
	"github.com/weaviate/weaviate-go-client/v4/weaviate/fault"
	"github.com/weaviate/weaviate/entities/models"
)

// DefaultCollection is the collection a [Config] without one uses.
const DefaultCollection = "Chunk"

// defaultTimeout bounds each call, retries included, when Config.HTTPClient
// is nil. It is the client library's own default.
const defaultTimeout = 60 * time.Second

// Property names of the collection.
const (
	propText        = "text"
	propTitle       = "title"
	propSource      = "source"
	propSection     = "section"
	propContentHash = "contentHash"
)

// ErrUnavailable is wrapped by errors caused by Weaviate being unreachable
// or answering 429 or 5xx after the retries. Such failures are worth trying
// again later; other errors (bad configuration, a rejected request) are not.
var ErrUnavailable = errors.New("weaviate unavailable")

// Config says which Weaviate to use and how.
type Config struct {
	// URL is Weaviate's REST endpoint: scheme, host and optional port, no
	// path (WEAVIATE_URL), for example http://127.0.0.1:8080.
	URL string
	// APIKey, if set, is sent as a bearer token (WEAVIATE_API_KEY).
	APIKey string
	// Collection is the collection (Weaviate class) that holds the chunks
	// (WEAVIATE_COLLECTION); DefaultCollection if empty. Weaviate spells
	// collection names with a capital first letter, so "chunk" is "Chunk".
	Collection string
	// Embed returns one vector per text, all of the same length. With it,
	// Add stores a vector with each chunk and Search is hybrid; without
	// it (nil) Search is BM25 only and chunks are stored without vectors.
	Embed func(ctx context.Context, texts []string) ([][]float32, error)
	// HTTPClient sends the requests; nil means a client with a 60-second
	// timeout. Its Transport is wrapped to retry 429 and 5xx answers.
	HTTPClient *http.Client
}

// Store is a Weaviate collection of chunks. Its methods may be called from
// any goroutine.
type Store struct {
	client     *wv.Client
	collection string
	embed      func(ctx context.Context, texts []string) ([][]float32, error)

	// For Ready, which must report "not ready" at once, without retries.
	readyURL string
	plain    *http.Client
	headers  http.Header
}

// New connects to Weaviate and creates the collection if it does not
// exist. Creating it is safe when several processes start at once. An
// existing collection must have the properties text, title, source,
// section and contentHash. New does not wait for Weaviate to start: an
// unreachable Weaviate is an error wrapping ErrUnavailable.
//
// Create one Store per process and keep it, not one per request: the
// client library has no Close, and once a client is garbage collected its
// finalizer blocks the runtime's finalizer goroutine for good
// (weaviate-go-client v4.16.1, connection/rest.go).
func New(ctx context.Context, cfg Config) (*Store, error) {
	u, err := parseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	collection, err := collectionName(cfg.Collection)
	if err != nil {
		return nil, err
	}

	plain := cfg.HTTPClient
	if plain == nil {
		plain = &http.Client{Timeout: defaultTimeout}
	}
	retrying := *plain // a copy, so the caller's client is left as it is
	next := plain.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	retrying.Transport = &retryTransport{next: next, backoff: defaultBackoff}

	headers := make(http.Header)
	clientHeaders := map[string]string{}
	if cfg.APIKey != "" {
		// What the client's auth.ApiKey does; AuthConfig cannot be combined
		// with our own HTTP client, headers can.
		headers.Set("Authorization", "Bearer "+cfg.APIKey)
		clientHeaders["Authorization"] = "Bearer " + cfg.APIKey
	}

	client, err := wv.NewClient(wv.Config{
		Scheme:           u.Scheme,
		Host:             u.Host,
		ConnectionClient: &retrying,
		Headers:          clientHeaders,
		// StartupTimeout 0: do not wait for Weaviate (the client would
		// poll every second and log); New reports an unreachable server.
	})
	if err != nil {
		return nil, fmt.Errorf("creating Weaviate client: %w", err)
	}
	s := &Store{
		client:     client,
		collection: collection,
		embed:      cfg.Embed,
		readyURL:   u.Scheme + "://" + u.Host + "/v1/.well-known/ready",
		plain:      plain,
		headers:    headers,
	}
	if err := s.ensureCollection(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Collection returns the name of the collection the store uses.
func (s *Store) Collection() string { return s.collection }

// parseURL checks that raw is scheme://host[:port] with no path.
func parseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	switch {
	case err != nil:
		return nil, fmt.Errorf("weaviate URL %q: %w", raw, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("weaviate URL %q: want http:// or https://", raw)
	case u.Host == "":
		return nil, fmt.Errorf("weaviate URL %q: no host", raw)
	case strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return nil, fmt.Errorf("weaviate URL %q: want scheme://host[:port] only", raw)
	}
	return u, nil
}

var validCollection = regexp.MustCompile(`^[A-Z][_0-9A-Za-z]*$`)

// collectionName returns name (or DefaultCollection) with its first letter
// in upper case, as Weaviate stores it, or an error if Weaviate would not
// accept it.
func collectionName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return DefaultCollection, nil
	}
	r, n := utf8.DecodeRuneInString(name)
	if fixed := string(unicode.ToUpper(r)) + name[n:]; validCollection.MatchString(fixed) {
		return fixed, nil
	}
	return "", fmt.Errorf("weaviate collection %q: want a letter then letters, digits or _", name)
}

// ensureCollection creates the collection unless it exists. If another
// process creates it between our look and our create, Weaviate refuses the
// second create (422) and the second look finds it.
func (s *Store) ensureCollection(ctx context.Context) error {
	class, err := s.getClass(ctx)
	if err != nil {
		return err
	}
	if class == nil {
		createErr := s.client.Schema().ClassCreator().WithClass(s.classDefinition()).Do(ctx)
		if createErr == nil {
			return nil
		}
		if class, err = s.getClass(ctx); err != nil || class == nil {
			return wrap(fmt.Sprintf("creating collection %s", s.collection), createErr)
		}
	}
	return s.checkClass(class)
}

// getClass returns the collection's definition, or nil if it does not exist.
func (s *Store) getClass(ctx context.Context) (*models.Class, error) {
	class, err := s.client.Schema().ClassGetter().WithClassName(s.collection).Do(ctx)
	if statusCode(err) == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, wrap(fmt.Sprintf("reading collection %s", s.collection), err)
	}
	return class, nil
}

// classDefinition is the collection a Store creates: text fields searched
// with BM25 (English stop words, Weaviate's default), source and
// contentHash kept whole for exact filters, and vectors supplied by us
// (no vectorizer module).
func (s *Store) classDefinition() *models.Class {
	searchable := func(name, desc string) *models.Property {
		return &models.Property{Name: name, Description: desc, DataType: []string{"text"}, Tokenization: "word"}
	}
	keyword := func(name, desc string) *models.Property {
		no := false
		return &models.Property{Name: name, Description: desc, DataType: []string{"text"},
			Tokenization: "field", IndexSearchable: &no}
	}
	return &models.Class{
		Class:       s.collection,
		Description: "Chunks of Tollgate's documents, one object per distinct text",
		Vectorizer:  "none",
		InvertedIndexConfig: &models.InvertedIndexConfig{
			Stopwords: &models.StopwordConfig{Preset: "en", Additions: stopWords()},
		},
		Properties: []*models.Property{
			searchable(propText, "the chunk's text"),
			searchable(propTitle, "the document's title"),
			searchable(propSection, "the heading path of the chunk within its document"),
			keyword(propSource, "path of the document, relative to the ingested folder"),
			keyword(propContentHash, "rag.ChunkID of the text; the object's ID is derived from it"),
		},
	}
}

// stopWords returns the English stop words of the embedded index (bleve's
// "en" analyzer, the Snowball list), so that both indexes ignore the same
// words of a question. Weaviate's own "en" preset lacks question words
// such as how, what, why, do, I, my and you, which then outweigh the
// words that matter.
func stopWords() []string {
	var words []string
	sc := bufio.NewScanner(bytes.NewReader(en.EnglishStopWords))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "|") // comments start with |
		if f := strings.Fields(line); len(f) > 0 {
			words = append(words, f[0])
		}
	}
	return words
}

// checkClass reports whether an existing collection has the properties
// the store reads and writes.
func (s *Store) checkClass(class *models.Class) error {
	have := make(map[string]bool, len(class.Properties))
	for _, p := range class.Properties {
		if p != nil {
			have[p.Name] = true
		}
	}
	var missing []string
	for _, name := range []string{propText, propTitle, propSource, propSection, propContentHash} {
		if !have[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("weaviate collection %s exists without the properties %s: choose another collection",
			s.collection, strings.Join(missing, ", "))
	}
	return nil
}

// Ready reports whether Weaviate is up and ready to serve, at once and
// without retries, for readiness probes.
func (s *Store) Ready(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.readyURL, nil)
	if err != nil {
		return fmt.Errorf("checking Weaviate: %w", err)
	}
	req.Header = s.headers.Clone()
	resp, err := s.plain.Do(req)
	if err != nil {
		return fmt.Errorf("checking Weaviate: %w: %w", ErrUnavailable, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("checking Weaviate: %w: status %d", ErrUnavailable, resp.StatusCode)
	}
	return nil
}

// inspect finds what a client error is about: the HTTP status Weaviate
// answered (0 if it did not answer), and the innermost error. The client
// nests errors in DerivedFromError, which has no Unwrap, so errors.Is and
// errors.As cannot see through it; inspect walks the chain instead.
func inspect(err error) (status int, root error) {
	for {
		var ce *fault.WeaviateClientError
		if !errors.As(err, &ce) {
			return 0, err
		}
		if ce.IsUnexpectedStatusCode {
			return ce.StatusCode, ce
		}
		if ce.DerivedFromError == nil {
			return 0, ce
		}
		err = ce.DerivedFromError
	}
}

// statusCode returns the HTTP status Weaviate answered in a client error,
// or 0.
func statusCode(err error) int {
	code, _ := inspect(err)
	return code
}

// wrap says what was being done when the client returned err, keeping the
// innermost error visible to errors.Is (context.Canceled, for example), and
// adds ErrUnavailable when Weaviate could not be reached, did not answer in
// time, or was still answering 429 or 5xx after the retries.
func wrap(doing string, err error) error {
	if err == nil {
		return nil
	}
	code, root := inspect(err)
	var netErr *url.Error
	switch {
	case code != 0 && retryable(code):
		return fmt.Errorf("%s: %w: %w", doing, ErrUnavailable, root)
	case code != 0, errors.Is(root, context.Canceled):
		return fmt.Errorf("%s: %w", doing, root)
	case errors.As(root, &netErr):
		return fmt.Errorf("%s: %w: %w", doing, ErrUnavailable, root)
	default:
		return fmt.Errorf("%s: %w", doing, root)
	}
}

// cleanQuery makes a question safe to put in a GraphQL string, which the
// client quotes with Go's %q: control characters other than new lines and
// tabs (which Go escapes in ways GraphQL rejects) become spaces, and
// invalid UTF-8 is dropped.
func cleanQuery(q string) string {
	q = strings.ToValidUTF8(q, "")
	q = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			return ' '
		}
		if !unicode.IsPrint(r) && !unicode.IsSpace(r) {
			return ' '
		}
		return r
	}, q)
	return strings.TrimSpace(q)
}
