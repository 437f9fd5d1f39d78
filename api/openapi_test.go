package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	valerrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/helpers"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"

	"github.com/gravitycar/tollgate/internal/auth"
)

// The api's tests run every request they make, and the response to it,
// through validateContract: api/openapi.json is the contract, and a
// response it does not describe fails the test that caused it.

// contract is api/openapi.json, parsed once and shared by all tests (the
// validator is safe for concurrent use).
type contract struct {
	v       validator.Validator
	schemas schema_validation.SchemaValidator
	problem *base.Schema // components.schemas.Problem, for unknown routes
}

var loadContract = sync.OnceValues(func() (*contract, error) {
	doc, err := libopenapi.NewDocument(openAPIDoc)
	if err != nil {
		return nil, fmt.Errorf("parsing openapi.json: %w", err)
	}
	v, errs := validator.NewValidator(doc, config.WithFormatAssertions())
	if len(errs) > 0 {
		return nil, fmt.Errorf("building the validator: %v", errs)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		return nil, fmt.Errorf("building the model: %w", err)
	}
	problem := model.Model.Components.Schemas.GetOrZero("Problem")
	if problem == nil {
		return nil, fmt.Errorf("openapi.json has no components.schemas.Problem")
	}
	return &contract{
		v:       v,
		schemas: schema_validation.NewSchemaValidator(config.WithFormatAssertions()),
		problem: problem.Schema(),
	}, nil
})

// exchange is one request and the response the api gave to it.
type exchange struct {
	method, target string // target: path and query
	reqHeader      http.Header
	reqBody        []byte
	status         int
	header         http.Header // as sent, when the status line was written
	body           []byte      // nil for event streams
}

// check validates an exchange against the document and returns what is
// wrong with it.
//
//   - The response must be one the document describes for the operation:
//     a documented status, its required headers (X-Request-Id everywhere,
//     Location, Retry-After, RateLimit-*, WWW-Authenticate where they are
//     required) with valid values, a documented Content-Type, and a JSON
//     body valid against its schema. Event streams and metrics are
//     checked for status, headers and Content-Type only.
//   - A request the document says is invalid (bad body, parameter or
//     Content-Type, no credentials) must be refused with a 4xx: a 2xx means
//     the api accepts what its contract forbids. (A valid request may still
//     be refused: the document cannot express every rule, such as a
//     question that is blank once trimmed.)
//   - A path or method the document does not have must be the api's 404 or
//     405 problem.
func (c *contract) check(x exchange) []string {
	req := httptest.NewRequestWithContext(context.Background(), x.method, x.target, bytes.NewReader(x.reqBody))
	req.Header = x.reqHeader.Clone()
	res := &http.Response{
		StatusCode: x.status,
		Header:     x.header,
		Body:       io.NopCloser(bytes.NewReader(x.body)),
		Request:    req,
	}
	_, reqErrs := c.v.ValidateHttpRequestSync(req)
	req.Body = io.NopCloser(bytes.NewReader(x.reqBody))

	var out []string
	if unknownRoute(reqErrs) {
		out = c.checkUnknownRoute(x)
	} else {
		if _, errs := c.v.ValidateHttpResponse(req, res); len(errs) > 0 {
			out = append(out, "response does not match the document: "+describeErrors(errs))
		}
		if len(reqErrs) > 0 && (x.status < 400 || x.status >= 500) {
			out = append(out, fmt.Sprintf("answered %d to a request the document says is invalid: %s",
				x.status, describeErrors(reqErrs)))
		}
	}
	for i, s := range out {
		out[i] = fmt.Sprintf("%s %s → %d: %s", x.method, x.target, x.status, s)
	}
	return out
}

// unknownRoute reports whether validating the request failed because the
// document has no such path, or no such method on it.
func unknownRoute(errs []*valerrors.ValidationError) bool {
	for _, e := range errs {
		if (e.ValidationType == helpers.PathValidation && e.ValidationSubType == helpers.ValidationMissing) ||
			e.ValidationSubType == helpers.ValidationMissingOperation {
			return true
		}
	}
	return false
}

func (c *contract) checkUnknownRoute(x exchange) []string {
	if x.status != http.StatusNotFound && x.status != http.StatusMethodNotAllowed {
		return []string{"the document has no such operation, but the api served it (add it to openapi.json)"}
	}
	var out []string
	if mt, _, _ := mime.ParseMediaType(x.header.Get("Content-Type")); mt != "application/problem+json" {
		out = append(out, fmt.Sprintf("Content-Type %q, want application/problem+json", x.header.Get("Content-Type")))
	}
	if x.header.Get("X-Request-Id") == "" {
		out = append(out, "no X-Request-Id")
	}
	if _, errs := c.schemas.ValidateSchemaBytes(c.problem, x.body); len(errs) > 0 {
		out = append(out, "the body is not a Problem: "+describeErrors(errs))
	}
	return out
}

func describeErrors(errs []*valerrors.ValidationError) string {
	var b strings.Builder
	for i, e := range errs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Message)
		if e.Reason != "" {
			b.WriteString(" (" + e.Reason + ")")
		}
		for _, f := range e.SchemaValidationErrors {
			b.WriteString(" [")
			if f.FieldPath != "" {
				b.WriteString(f.FieldPath + ": ")
			}
			b.WriteString(f.Reason)
			if f.KeywordLocation != "" {
				b.WriteString(" at " + f.KeywordLocation)
			}
			b.WriteString("]")
		}
	}
	return b.String()
}

// validateContract wraps the api's handler so that every exchange it serves
// is checked against openapi.json. Handlers run on the server's goroutines,
// so failures are collected and reported on t by a cleanup. Call it before
// registering the test server's Close: cleanups run last-registered first,
// so Close (which waits for every request) runs before the report.
func validateContract(t testing.TB, h http.Handler) http.Handler {
	t.Helper()
	c, err := loadContract()
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		checked  int
		failures []string
		hijacked sync.WaitGroup // responses written on hijacked connections
	)
	record := func(x exchange) {
		problems := c.check(x)
		mu.Lock()
		checked++
		failures = append(failures, problems...)
		mu.Unlock()
	}
	t.Cleanup(func() {
		hijacked.Wait() // the api's detached waiters are closed by an earlier cleanup
		mu.Lock()
		defer mu.Unlock()
		const shown = 20
		for _, f := range failures[:min(len(failures), shown)] {
			t.Errorf("OpenAPI contract: %s", f)
		}
		if len(failures) > shown {
			t.Errorf("OpenAPI contract: ... and %d more", len(failures)-shown)
		}
		t.Logf("%d exchanges checked against openapi.json, %d failures", checked, len(failures))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// CORS preflights are answered by the CORS middleware for any path
		// and are not API operations; static assets are files.
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" ||
			strings.HasPrefix(r.URL.Path, "/static/") {
			h.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "reading the request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		x := exchange{method: r.Method, target: r.URL.RequestURI(), reqHeader: r.Header.Clone(), reqBody: body}

		rw := &recordingWriter{ResponseWriter: w, hijacks: &hijacked}
		h.ServeHTTP(rw, r)
		if conn := rw.hijacked; conn != nil {
			// A detached waiter writes its response itself: check it
			// once the connection is closed.
			go func() {
				defer hijacked.Done()
				<-conn.closed
				res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(conn.written())), r)
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s %s: reading the hijacked response: %v", x.method, x.target, err))
					mu.Unlock()
					return
				}
				x.status, x.header = res.StatusCode, res.Header
				if mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type")); mt != "text/event-stream" {
					x.body, _ = io.ReadAll(res.Body)
				}
				record(x)
			}()
			return
		}
		if !rw.wroteHeader {
			rw.WriteHeader(http.StatusOK) // what net/http does for a handler that writes nothing
		}
		x.status, x.header, x.body = rw.status, rw.header, rw.body.Bytes()
		if rw.streaming {
			x.body = nil
		}
		if x.header.Get("Content-Type") == "" && len(x.body) > 0 {
			x.header.Set("Content-Type", http.DetectContentType(x.body)) // as net/http sniffs it
		}
		record(x)
	})
}

// recordingWriter passes a response through (flushes included, so event
// streams and long polls behave as without it) and keeps a copy of its
// status, headers and, except for event streams, body.
type recordingWriter struct {
	http.ResponseWriter
	wroteHeader bool
	status      int
	header      http.Header
	streaming   bool
	body        bytes.Buffer
	hijacked    *recordingConn
	hijacks     *sync.WaitGroup // counts hijacked connections until checked
}

const maxRecordedBody = 8 << 20

func (w *recordingWriter) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.wroteHeader = true
		w.status = code
		w.header = w.ResponseWriter.Header().Clone()
		mt, _, _ := mime.ParseMediaType(w.header.Get("Content-Type"))
		w.streaming = mt == "text/event-stream"
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recordingWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.streaming && w.body.Len() < maxRecordedBody {
		w.body.Write(b)
	}
	return w.ResponseWriter.Write(b)
}

func (w *recordingWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands the connection over, keeping a copy of what is written
// on it, so that detached waiters' responses are checked too.
func (w *recordingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// Counted here, not once the handler returns: the client may have its
	// response, and the test may have ended and be waiting in its cleanup,
	// before then. The api hijacks holding the lock its shutdown takes, so
	// this Add happens before that cleanup's Wait.
	w.hijacks.Add(1)
	w.hijacked = &recordingConn{Conn: conn, closed: make(chan struct{})}
	return w.hijacked, rw, nil
}

// recordingConn is a hijacked connection that keeps what is written.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	out    bytes.Buffer
	once   sync.Once
	closed chan struct{}
}

func (c *recordingConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.out.Write(b)
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *recordingConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

func (c *recordingConn) written() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.out.Bytes())
}

// routerForDocs is the api's router with every optional route (dev mode's
// /dev/token included), without NATS: for looking at routes and serving
// the document. ready is what /readyz reports.
func routerForDocs(t *testing.T, ready func(context.Context) error) *gin.Engine {
	t.Helper()
	iss, err := auth.LoadOrCreateIssuer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return newRouter(routerDeps{
		logger:    slog.New(slog.DiscardHandler),
		metrics:   newMetrics(),
		queries:   &queries{},
		ready:     ready,
		devIssuer: iss,
	})
}

// TestOpenAPIDocument: the served /openapi.json is a valid OpenAPI 3.1
// document and describes exactly the routes the api registers.
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	var notReady atomic.Bool
	router := routerForDocs(t, func(context.Context) error {
		if notReady.Load() {
			return errors.New("nats is not connected")
		}
		return nil
	})
	srv := httptest.NewServer(validateContract(t, router))
	t.Cleanup(srv.Close)

	res, err := srv.Client().Get(srv.URL + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	served, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET /openapi.json: %d, %v", res.StatusCode, err)
	}
	if mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type")); mt != "application/json" {
		t.Fatalf("Content-Type %q", res.Header.Get("Content-Type"))
	}

	doc, err := libopenapi.NewDocument(served)
	if err != nil {
		t.Fatalf("parsing the served document: %v", err)
	}
	if v := doc.GetVersion(); !strings.HasPrefix(v, "3.1.") {
		t.Fatalf("openapi %q, want 3.1.x", v)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("building the validator: %v", errs)
	}
	if ok, errs := v.ValidateDocument(); !ok {
		t.Fatalf("the document is not valid OpenAPI 3.1: %s", describeErrors(errs))
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatalf("building the model: %v", err)
	}
	if model.Index != nil {
		for _, e := range model.Index.GetReferenceIndexErrors() {
			t.Errorf("reference: %v", e)
		}
	}

	documented := map[string]bool{}
	for path, item := range model.Model.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			documented[strings.ToUpper(method)+" "+path] = true
			if op.OperationId == "" {
				t.Errorf("%s %s has no operationId", strings.ToUpper(method), path)
			}
			if op.Responses == nil || op.Responses.Codes.Len() == 0 {
				t.Errorf("%s %s documents no responses", strings.ToUpper(method), path)
			}
		}
	}
	registered := map[string]bool{}
	for _, r := range router.Routes() {
		if r.Method == http.MethodOptions || r.Method == http.MethodHead || strings.HasPrefix(r.Path, "/static/") {
			continue
		}
		registered[r.Method+" "+ginToOpenAPIPath(r.Path)] = true
	}
	var missing, extra []string
	for route := range registered {
		if !documented[route] {
			missing = append(missing, route)
		}
	}
	for route := range documented {
		if !registered[route] {
			extra = append(extra, route)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	if len(missing) > 0 {
		t.Errorf("routes the api serves that openapi.json does not describe: %v", missing)
	}
	if len(extra) > 0 {
		t.Errorf("operations in openapi.json that the api does not serve: %v", extra)
	}
	if len(registered) < 13 {
		t.Errorf("only %d routes registered: %v", len(registered), registered)
	}

	// The answers the other tests do not ask for, each checked against the
	// document by validateContract like every other exchange.
	get := func(method, path string) int {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/", 200},
		{"GET", "/dev/token?user=alice", 200},
		{"GET", "/dev/token?user=ops&admin=true", 200},
		{"GET", "/dev/token", 400},
		{"GET", "/dev/token?user=%20", 400},
		{"GET", "/health", 200},
		{"GET", "/healthz", 200},
		{"GET", "/readyz", 200},
		{"GET", "/metrics", 200},
		{"GET", "/v1/me", 401},
		{"GET", "/v1/admin/usage", 401},
		{"GET", "/v1/queries/x/events", 401},
		{"POST", "/api/query", 401},
		{"DELETE", "/v1/me", 405},
		{"GET", "/v2/nothing", 404},
	} {
		if got := get(tc.method, tc.path); got != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, got, tc.status)
		}
	}
	notReady.Store(true)
	if got := get("GET", "/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz when not ready: %d, want 503", got)
	}
}

// ginToOpenAPIPath turns gin's /v1/queries/:id into /v1/queries/{id}.
func ginToOpenAPIPath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, ":") || strings.HasPrefix(s, "*") {
			segs[i] = "{" + s[1:] + "}"
		}
	}
	return strings.Join(segs, "/")
}

// TestContractCheckBites: the check that wraps every test's server catches
// the drift it is there for.
func TestContractCheckBites(t *testing.T) {
	t.Parallel()
	c, err := loadContract()
	if err != nil {
		t.Fatal(err)
	}
	const id = "01J9ZK3X6V8Q2M4N5P7R9S0T1W"
	jsonHeader := func(kv ...string) http.Header {
		h := http.Header{"Content-Type": {"application/json; charset=utf-8"}, "X-Request-Id": {"req-1"}}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	authed := http.Header{"Authorization": {"Bearer x"}}
	jsonReq := http.Header{"Authorization": {"Bearer x"}, "Content-Type": {"application/json"}}
	record := `{"id":"` + id + `","status":"queued","question":"q","k":5,"created_at":"2026-01-02T03:04:05.123456789Z"}`
	problem := func(status int, kind string) []byte {
		return []byte(fmt.Sprintf(`{"type":"urn:tollgate:problem:%s","title":"t","status":%d}`, kind, status))
	}
	problemHeader := http.Header{"Content-Type": {"application/problem+json"}, "X-Request-Id": {"req-1"}}
	accepted := `{"id":"` + id + `","status":"queued","created_at":"2026-01-02T03:04:05Z","links":{"self":"/v1/queries/` + id + `","events":"/v1/queries/` + id + `/events"}}`
	rate := []string{"RateLimit-Limit", "15", "RateLimit-Remaining", "14", "RateLimit-Reset", "60"}

	good := []exchange{
		{method: "GET", target: "/v1/queries/" + id + "?wait=5", reqHeader: authed, status: 200, header: jsonHeader(), body: []byte(record)},
		{method: "POST", target: "/v1/queries", reqHeader: jsonReq, reqBody: []byte(`{"question":"q"}`), status: 202,
			header: jsonHeader(append(rate, "Location", "/v1/queries/"+id)...), body: []byte(accepted)},
		{method: "POST", target: "/v1/queries", reqHeader: authed, reqBody: []byte(`q`), status: 415, header: problemHeader, body: problem(415, "unsupported-media-type")},
		{method: "GET", target: "/nope", status: 404, header: problemHeader, body: problem(404, "not-found")},
	}
	for _, x := range good {
		if problems := c.check(x); len(problems) > 0 {
			t.Errorf("a valid exchange was refused: %v", problems)
		}
	}

	bad := map[string]exchange{
		"the owner leaks": {method: "GET", target: "/v1/queries/" + id, reqHeader: authed, status: 200, header: jsonHeader(),
			body: []byte(strings.Replace(record, `"k":5`, `"k":5,"user":"alice"`, 1))},
		"an unknown status": {method: "GET", target: "/v1/queries/" + id, reqHeader: authed, status: 200, header: jsonHeader(),
			body: []byte(strings.Replace(record, "queued", "pending", 1))},
		"a missing field": {method: "GET", target: "/v1/queries/" + id, reqHeader: authed, status: 200, header: jsonHeader(),
			body: []byte(strings.Replace(record, `"k":5,`, "", 1))},
		"an undocumented status code": {method: "GET", target: "/v1/queries/" + id, reqHeader: authed, status: 418, header: problemHeader, body: problem(418, "teapot")},
		"no X-Request-Id": {method: "GET", target: "/v1/queries/" + id, reqHeader: authed, status: 200,
			header: http.Header{"Content-Type": {"application/json"}}, body: []byte(record)},
		"a 202 without Location": {method: "POST", target: "/v1/queries", reqHeader: jsonReq, reqBody: []byte(`{"question":"q"}`), status: 202,
			header: jsonHeader(rate...), body: []byte(accepted)},
		"a 429 without Retry-After": {method: "POST", target: "/v1/queries", reqHeader: jsonReq, reqBody: []byte(`{"question":"q"}`), status: 429,
			header: http.Header{"Content-Type": {"application/problem+json"}, "X-Request-Id": {"r"}, "RateLimit-Limit": {"15"}, "RateLimit-Remaining": {"0"}, "RateLimit-Reset": {"60"}},
			body:   problem(429, "rate-limited-burst")},
		"a 401 without a challenge":   {method: "GET", target: "/v1/me", status: 401, header: problemHeader, body: problem(401, "unauthenticated")},
		"a problem of the wrong kind": {method: "GET", target: "/v1/queries/" + id, reqHeader: authed, status: 404, header: problemHeader, body: problem(404, "gone")},
		"a problem as plain JSON":     {method: "GET", target: "/v1/queries/" + id, reqHeader: authed, status: 404, header: jsonHeader(), body: problem(404, "not-found")},
		"an unknown field accepted": {method: "POST", target: "/v1/queries", reqHeader: jsonReq, reqBody: []byte(`{"question":"q","model":"gpt-4"}`), status: 202,
			header: jsonHeader(append(rate, "Location", "/v1/queries/"+id)...), body: []byte(accepted)},
		"k out of range accepted": {method: "POST", target: "/v1/queries", reqHeader: jsonReq, reqBody: []byte(`{"question":"q","k":21}`), status: 202,
			header: jsonHeader(append(rate, "Location", "/v1/queries/"+id)...), body: []byte(accepted)},
		"a succeeded query without usage": {method: "GET", target: "/v1/queries/" + id, reqHeader: authed, status: 200, header: jsonHeader(),
			body: []byte(strings.Replace(record, `"queued"`, `"succeeded","completed_at":"2026-01-02T03:04:06Z"`, 1))},
		"a failed query without its error": {method: "GET", target: "/v1/queries/" + id, reqHeader: authed, status: 200, header: jsonHeader(),
			body: []byte(strings.Replace(record, `"queued"`, `"failed","completed_at":"2026-01-02T03:04:06Z"`, 1))},
		"a timestamp that is not RFC 3339": {method: "GET", target: "/v1/queries/" + id, reqHeader: authed, status: 200, header: jsonHeader(),
			body: []byte(strings.Replace(record, "2026-01-02T03:04:05.123456789Z", "yesterday", 1))},
		"an id that is not a ULID": {method: "GET", target: "/v1/queries/" + id, reqHeader: authed, status: 200, header: jsonHeader(),
			body: []byte(strings.Replace(record, id, "42", 1))},
		"a 400 validation problem without errors": {method: "POST", target: "/v1/queries", reqHeader: jsonReq, reqBody: []byte(`{"question":"q"}`), status: 400,
			header: problemHeader, body: problem(400, "validation")},
		"an undocumented route served":         {method: "GET", target: "/v1/secret", reqHeader: authed, status: 200, header: jsonHeader(), body: []byte(`{}`)},
		"an unknown route's 404 not a problem": {method: "GET", target: "/nope", status: 404, header: http.Header{"Content-Type": {"text/plain"}, "X-Request-Id": {"r"}}, body: []byte("404 page not found")},
	}
	for name, x := range bad {
		if problems := c.check(x); len(problems) == 0 {
			t.Errorf("%s: not caught", name)
		} else {
			t.Logf("%s: %s", name, problems[0])
		}
	}
}
