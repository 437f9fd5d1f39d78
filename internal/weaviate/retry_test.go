package weaviate

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// scripted is a server that answers with the statuses in its script, one
// per request, then 200; it records the bodies it received.
type scripted struct {
	mu         sync.Mutex
	script     []int
	retryAfter string
	bodies     []string
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.bodies = append(s.bodies, string(body))
	status := http.StatusOK
	if n := len(s.bodies); n <= len(s.script) {
		status = s.script[n-1]
	}
	s.mu.Unlock()
	if s.retryAfter != "" {
		w.Header().Set("Retry-After", s.retryAfter)
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, http.StatusText(status))
}

func (s *scripted) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.bodies)
}

// fast retries quickly, for tests.
var fast = backoff{attempts: 4, base: time.Millisecond, max: 5 * time.Millisecond}

func roundTrip(t *testing.T, ctx context.Context, b backoff, srv *scripted, body string) (*http.Response, error) {
	t.Helper()
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: &retryTransport{next: tr, backoff: b}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	return resp, err
}

func TestRetryTransport(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		script     []int
		retryAfter string
		want       int // final status
		requests   int
	}{
		{"success at once", nil, "", 200, 1},
		{"429, 503, 502, 500 are retried", []int{429, 503, 502}, "", 200, 4},
		{"Retry-After 0 is honoured", []int{429, 429}, "0", 200, 3},
		{"gives up after the last attempt", []int{503, 503, 503, 503, 503}, "", 503, 4},
		{"400 is not retried", []int{400}, "", 400, 1},
		{"404 is not retried", []int{404}, "", 404, 1},
		{"422 is not retried", []int{422}, "", 422, 1},
		{"501 is not retried", []int{501}, "", 501, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := &scripted{script: tt.script, retryAfter: tt.retryAfter}
			resp, err := roundTrip(t, context.Background(), fast, srv, `{"query":"q"}`)
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
			if resp.StatusCode != tt.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.want)
			}
			bodies := srv.requests()
			if len(bodies) != tt.requests {
				t.Errorf("%d requests, want %d", len(bodies), tt.requests)
			}
			for i, b := range bodies {
				if b != `{"query":"q"}` {
					t.Errorf("request %d had body %q", i+1, b)
				}
			}
		})
	}
}

// A wait that would end after the deadline is not started: the last
// answer is returned at once.
func TestRetryTransportDeadline(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	slow := backoff{attempts: 5, base: time.Hour, max: time.Hour}
	srv := &scripted{script: []int{503, 503}}
	resp, err := roundTrip(t, ctx, slow, srv, "x")
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("RoundTrip: %v, %v; want the 503", resp, err)
	}
	if n := len(srv.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}

	// Retry-After beyond the deadline: the same.
	srv = &scripted{script: []int{429}, retryAfter: "60"}
	short, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	patient := backoff{attempts: 5, base: time.Millisecond, max: time.Hour}
	if resp, err := roundTrip(t, short, patient, srv, "x"); err != nil || resp.StatusCode != 429 {
		t.Errorf("RoundTrip: %v, %v; want the 429", resp, err)
	}
	if n := len(srv.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

// Canceling the context during a wait ends it.
func TestRetryTransportCanceled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	srv := &scripted{script: []int{503, 503}}
	slow := backoff{attempts: 5, base: time.Hour, max: time.Hour}
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := roundTrip(t, ctx, slow, srv, "x")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("RoundTrip: %v, want context.Canceled", err)
	}
}

func TestBackoffWait(t *testing.T) {
	t.Parallel()
	b := backoff{attempts: 10, base: 100 * time.Millisecond, max: 2 * time.Second}
	tests := []struct {
		attempt    int
		retryAfter string
		lo, hi     time.Duration
	}{
		{1, "", 50 * time.Millisecond, 100 * time.Millisecond},
		{2, "", 100 * time.Millisecond, 200 * time.Millisecond},
		{3, "", 200 * time.Millisecond, 400 * time.Millisecond},
		{5, "", 800 * time.Millisecond, 1600 * time.Millisecond},
		{6, "", time.Second, 2 * time.Second}, // capped
		{60, "", time.Second, 2 * time.Second},
		{1, "1", time.Second, time.Second},
		{1, "0", 0, 0},
		{1, "3600", 2 * time.Second, 2 * time.Second},                                        // capped
		{2, "Wed, 21 Oct 2015 07:28:00 GMT", 100 * time.Millisecond, 200 * time.Millisecond}, // dates are ignored
		{1, "-5", 50 * time.Millisecond, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		for range 50 {
			if got := b.wait(tt.attempt, tt.retryAfter); got < tt.lo || got > tt.hi {
				t.Errorf("wait(%d, %q) = %v, want in [%v, %v]", tt.attempt, tt.retryAfter, got, tt.lo, tt.hi)
				break
			}
		}
	}
}

func TestCollectionName(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want, err string }{
		{"", "Chunk", ""},
		{"Chunk", "Chunk", ""},
		{"chunk", "Chunk", ""},
		{" Docs_v2 ", "Docs_v2", ""},
		{"my-chunks", "", "want a letter"},
		{"2chunks", "", "want a letter"},
		{"_x", "", "want a letter"},
		{"Ünicode", "", "want a letter"},
	}
	for _, tt := range tests {
		got, err := collectionName(tt.in)
		if got != tt.want || (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
			t.Errorf("collectionName(%q) = %q, %v; want %q, %q", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestParseURL(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"http://127.0.0.1:8080", "https://x.weaviate.cloud", "http://weaviate:8080/", " http://h:1 "} {
		if _, err := parseURL(ok); err != nil {
			t.Errorf("parseURL(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "127.0.0.1:8080", "ftp://h", "http://", "http://h/v1", "http://h?x=1", "http://u:p@h"} {
		if _, err := parseURL(bad); err == nil {
			t.Errorf("parseURL(%q): no error", bad)
		}
	}
}

func TestCleanQuery(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"  how many?  ", "how many?"},
		{"a\x00b\x07c", "a b c"},
		{"line\nbreak\ttab", "line\nbreak\ttab"},
		{"bad \xff utf8", "bad  utf8"},
		{"\u200b", ""}, // zero-width space: not printable
		{"Größe — ok", "Größe — ok"},
	}
	for _, tt := range tests {
		if got := cleanQuery(tt.in); got != tt.want {
			t.Errorf("cleanQuery(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNumber(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want number
		ok   bool
	}{
		{`"0.8125"`, 0.8125, true},
		{`1.5`, 1.5, true},
		{`null`, 0, true},
		{`""`, 0, true},
		{`"x"`, 0, false},
	}
	for _, tt := range tests {
		var n number
		err := n.UnmarshalJSON([]byte(tt.in))
		if (err == nil) != tt.ok || n != tt.want {
			t.Errorf("UnmarshalJSON(%s) = %v, %v; want %v", tt.in, n, err, tt.want)
		}
	}
}

func TestObjectID(t *testing.T) {
	t.Parallel()
	a, b := ObjectID("0123456789abcdef0123456789abcdef"), ObjectID("0123456789abcdef0123456789abcdee")
	if a == b || a != ObjectID("0123456789abcdef0123456789abcdef") || len(a) != 36 || a[14] != '5' {
		t.Errorf("ObjectID: %s, %s; want distinct, stable version 5 UUIDs", a, b)
	}
}
