package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gravitycar/tollgate/internal/rag"
)

// chatRequest is what the fake endpoint records of a request.
type chatRequest struct {
	Method, Path, Authorization string
	Body                        struct {
		Model               string `json:"model"`
		MaxTokens           *int   `json:"max_tokens"`
		MaxCompletionTokens *int   `json:"max_completion_tokens"`
		Messages            []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
	}
}

// fakeChat starts an OpenAI-compatible endpoint on loopback that answers
// every request with status and body. It returns a generator configured by
// cfg and pointed at it, and the requests it receives.
func fakeChat(t *testing.T, cfg OpenAIConfig, status int, body string) (*OpenAI, <-chan chatRequest) {
	t.Helper()
	got := make(chan chatRequest, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := chatRequest{Method: r.Method, Path: r.URL.Path, Authorization: r.Header.Get("Authorization")}
		if err := json.NewDecoder(r.Body).Decode(&req.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case got <- req:
		default: // the test looks at the first request only
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	cfg.BaseURL = srv.URL + "/v1"
	cfg.HTTPClient = srv.Client()
	return NewOpenAI(cfg), got
}

func testPassages() []rag.Passage {
	return []rag.Passage{
		{ID: "a", Title: "Limits", Source: "docs/limits.md", Text: "Each user holds fifteen request tokens."},
		{ID: "b", Title: "Refunds", Source: "docs/refunds.md", Text: "Refunds are issued within 14 days."},
	}
}

func TestOpenAIGenerate(t *testing.T) {
	t.Parallel()
	g, got := fakeChat(t, OpenAIConfig{APIKey: "sk-test", Model: "gpt-4o-mini", MaxTokens: 256}, http.StatusOK, `{
		"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000,
		"model": "gpt-4o-mini-2024-07-18",
		"choices": [
			{"index": 0, "message": {"role": "assistant", "content": "Within 14 days [2]."}, "finish_reason": "stop"},
			{"index": 1, "message": {"role": "assistant", "content": "second choice"}, "finish_reason": "stop"}
		],
		"usage": {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290,
			"prompt_tokens_details": {"cached_tokens": 1024}}
	}`)
	const question = "How long do refunds take?"

	ans, err := g.Generate(t.Context(), question, testPassages())
	if err != nil {
		t.Fatal(err)
	}
	if ans.Text != "Within 14 days [2]." {
		t.Errorf("Text = %q, want the first choice", ans.Text)
	}
	wantUsage := Usage{Model: "gpt-4o-mini-2024-07-18", PromptTokens: 1234, CachedPromptTokens: 1024, CompletionTokens: 56}
	if ans.Usage != wantUsage {
		t.Errorf("Usage = %+v, want %+v", ans.Usage, wantUsage)
	}

	req := <-got
	if req.Method != http.MethodPost || req.Path != "/v1/chat/completions" {
		t.Errorf("request %s %s, want POST /v1/chat/completions", req.Method, req.Path)
	}
	if req.Authorization != "Bearer sk-test" {
		t.Errorf("Authorization = %q, want Bearer sk-test", req.Authorization)
	}
	if req.Body.Model != "gpt-4o-mini" {
		t.Errorf("model = %q, want gpt-4o-mini", req.Body.Model)
	}
	if req.Body.MaxTokens == nil || *req.Body.MaxTokens != 256 {
		t.Errorf("max_tokens = %v, want 256", req.Body.MaxTokens)
	}
	if req.Body.MaxCompletionTokens != nil {
		t.Errorf("max_completion_tokens sent for a non-reasoning model")
	}
	want := Messages(question, testPassages())
	if len(req.Body.Messages) != len(want) {
		t.Fatalf("got %d messages, want %d", len(req.Body.Messages), len(want))
	}
	for i, m := range req.Body.Messages {
		if m.Role != want[i].Role || m.Content != want[i].Content {
			t.Errorf("message %d = %s %q, want %s %q", i, m.Role, m.Content, want[i].Role, want[i].Content)
		}
	}
	for _, w := range []string{"[1] Title: Limits", "[2] Title: Refunds", "Refunds are issued within 14 days.", question} {
		if !strings.Contains(req.Body.Messages[1].Content, w) {
			t.Errorf("user message lacks %q", w)
		}
	}
}

func TestOpenAIUsageDefaults(t *testing.T) {
	t.Parallel()
	// No model in the response and no prompt_tokens_details: the configured
	// model and no cached tokens.
	g, got := fakeChat(t, OpenAIConfig{Model: "local-llama"}, http.StatusOK, `{
		"choices": [{"index": 0, "message": {"role": "assistant", "content": "I do not know."}}],
		"usage": {"prompt_tokens": 90, "completion_tokens": 5, "total_tokens": 95}
	}`)
	ans, err := g.Generate(t.Context(), "q", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Answer{Text: "I do not know.", Usage: Usage{Model: "local-llama", PromptTokens: 90, CompletionTokens: 5}}); ans != want {
		t.Errorf("got %+v, want %+v", ans, want)
	}
	if req := <-got; req.Body.MaxTokens != nil || req.Body.MaxCompletionTokens != nil {
		t.Errorf("a cap was sent though none is configured")
	}
}

func TestOpenAIReasoningModelCap(t *testing.T) {
	t.Parallel()
	// go-openai refuses max_tokens for reasoning models: the cap must go in
	// max_completion_tokens.
	g, got := fakeChat(t, OpenAIConfig{Model: "o3-mini", MaxTokens: 300}, http.StatusOK, `{
		"model": "o3-mini-2025-01-31",
		"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
		"usage": {"prompt_tokens": 10, "completion_tokens": 200}
	}`)
	ans, err := g.Generate(t.Context(), "q", testPassages())
	if err != nil {
		t.Fatal(err)
	}
	if ans.Usage.Model != "o3-mini-2025-01-31" {
		t.Errorf("Usage.Model = %q", ans.Usage.Model)
	}
	req := <-got
	if req.Body.MaxTokens != nil {
		t.Errorf("max_tokens sent for a reasoning model")
	}
	if req.Body.MaxCompletionTokens == nil || *req.Body.MaxCompletionTokens != 300 {
		t.Errorf("max_completion_tokens = %v, want 300", req.Body.MaxCompletionTokens)
	}
}

func TestOpenAINoChoices(t *testing.T) {
	t.Parallel()
	g, _ := fakeChat(t, OpenAIConfig{Model: "gpt-4o-mini"}, http.StatusOK, `{
		"model": "gpt-4o-mini", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 0}
	}`)
	ans, err := g.Generate(t.Context(), "q", nil)
	if !errors.Is(err, ErrNoChoices) {
		t.Fatalf("err = %v, want ErrNoChoices", err)
	}
	if want := (Usage{Model: "gpt-4o-mini", PromptTokens: 7}); ans.Usage != want {
		t.Errorf("Usage = %+v, want the billed %+v", ans.Usage, want)
	}
}

func TestOpenAIErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		status   int
		body     string
		apiError bool // *openai.APIError; otherwise *openai.RequestError
		message  string
	}{
		{
			name:     "bad request",
			status:   http.StatusBadRequest,
			body:     `{"error": {"message": "max_tokens is too large", "type": "invalid_request_error", "param": "max_tokens", "code": null}}`,
			apiError: true,
			message:  "max_tokens is too large",
		},
		{
			name:     "rate limited",
			status:   http.StatusTooManyRequests,
			body:     `{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}`,
			apiError: true,
			message:  "Rate limit reached",
		},
		{
			name:   "rate limited by a proxy without an error body",
			status: http.StatusTooManyRequests,
			body:   `too many requests`,
		},
		{
			name:   "bad gateway",
			status: http.StatusBadGateway,
			body:   `<html>bad gateway</html>`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g, _ := fakeChat(t, OpenAIConfig{APIKey: "k", Model: "gpt-4o-mini", Backoff: Backoff{Initial: 5 * time.Millisecond, Max: 10 * time.Millisecond}}, tt.status, tt.body)
			// Transient failures are retried until the deadline is near.
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			ans, err := g.Generate(ctx, "q", testPassages())
			if err == nil {
				t.Fatal("no error")
			}
			if ans != (Answer{}) {
				t.Errorf("answer %+v returned with the error", ans)
			}
			if !strings.Contains(err.Error(), "chat completion with gpt-4o-mini") {
				t.Errorf("error %q lacks context", err)
			}
			if tt.apiError {
				var apiErr *openai.APIError
				if !errors.As(err, &apiErr) {
					t.Fatalf("errors.As(%v, *openai.APIError) failed", err)
				}
				if apiErr.HTTPStatusCode != tt.status || apiErr.Message != tt.message {
					t.Errorf("APIError status %d message %q, want %d %q", apiErr.HTTPStatusCode, apiErr.Message, tt.status, tt.message)
				}
				return
			}
			var reqErr *openai.RequestError
			if !errors.As(err, &reqErr) {
				t.Fatalf("errors.As(%v, *openai.RequestError) failed", err)
			}
			if reqErr.HTTPStatusCode != tt.status {
				t.Errorf("RequestError status %d, want %d", reqErr.HTTPStatusCode, tt.status)
			}
		})
	}
}

func TestOpenAICanceled(t *testing.T) {
	t.Parallel()
	g, _ := fakeChat(t, OpenAIConfig{Model: "gpt-4o-mini"}, http.StatusOK, `{}`)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := g.Generate(ctx, "q", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestOpenAIDeadlineKeepsTheLastFailure(t *testing.T) {
	t.Parallel()
	// A 502, then an attempt that hangs until the deadline cuts it short:
	// the error still says what the endpoint last answered.
	hung, hang := make(chan struct{}), make(chan struct{})
	g, _ := scripted(t, status(http.StatusBadGateway, ""), func(http.ResponseWriter) {
		close(hung) // called once: the deadline ends the loop
		<-hang
	})
	t.Cleanup(func() { close(hang) }) // before the server closes
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	_, err := g.Generate(ctx, "q", testPassages())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}
	var apiErr *openai.APIError
	if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != http.StatusBadGateway {
		t.Errorf("err = %v, want the 502 kept as an *openai.APIError", err)
	}
	select {
	case <-hung:
	case <-time.After(10 * time.Second):
		t.Error("the second attempt never reached the endpoint")
	}
}

// scripted is an OpenAI-compatible endpoint answering from a list of
// (status, headers, body), then with the last one forever.
func scripted(t *testing.T, replies ...func(w http.ResponseWriter)) (*OpenAI, *[]time.Time) {
	t.Helper()
	var mu sync.Mutex
	var calls []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n := len(calls)
		calls = append(calls, time.Now())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		replies[min(n, len(replies)-1)](w)
	}))
	t.Cleanup(srv.Close)
	g := NewOpenAI(OpenAIConfig{APIKey: "k", BaseURL: srv.URL + "/v1", Model: "gpt-4o-mini",
		Backoff: Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond}})
	return g, &calls
}

func status(code int, retryAfter string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":{"message":"status %d","type":"x"}}`, code)
	}
}

func ok(w http.ResponseWriter) {
	fmt.Fprint(w, `{"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"fine"}}],"usage":{"prompt_tokens":9,"completion_tokens":1}}`)
}

func TestOpenAIRetriesTransientFailures(t *testing.T) {
	t.Parallel()
	t.Run("429 then success, after Retry-After", func(t *testing.T) {
		t.Parallel()
		g, calls := scripted(t, status(429, "1"), ok)
		ans, err := g.Generate(t.Context(), "q", testPassages())
		if err != nil || ans.Text != "fine" || ans.Usage.PromptTokens != 9 {
			t.Fatalf("Generate = %+v, %v", ans, err)
		}
		if len(*calls) != 2 || (*calls)[1].Sub((*calls)[0]) < time.Second {
			t.Fatalf("%d calls, second %v after the first; want 2, at least Retry-After (1s) apart", len(*calls), (*calls)[1].Sub((*calls)[0]))
		}
	})
	t.Run("500 three times then success", func(t *testing.T) {
		t.Parallel()
		g, calls := scripted(t, status(500, ""), status(502, ""), status(503, ""), ok)
		if ans, err := g.Generate(t.Context(), "q", nil); err != nil || ans.Text != "fine" || len(*calls) != 4 {
			t.Fatalf("Generate = %+v, %v after %d calls", ans, err, len(*calls))
		}
	})
	t.Run("400 fails fast", func(t *testing.T) {
		t.Parallel()
		g, calls := scripted(t, status(400, ""))
		_, err := g.Generate(t.Context(), "q", nil)
		var pe *PermanentError
		if !errors.As(err, &pe) || pe.Code != "model_rejected" || !errors.Is(err, ErrPermanent) || len(*calls) != 1 {
			t.Fatalf("err %v after %d calls, want one permanent model_rejected", err, len(*calls))
		}
	})
	t.Run("context too long", func(t *testing.T) {
		t.Parallel()
		g, _ := scripted(t, func(w http.ResponseWriter) {
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":{"message":"maximum context length","type":"invalid_request_error","code":"context_length_exceeded"}}`)
		})
		_, err := g.Generate(t.Context(), "q", nil)
		var pe *PermanentError
		if !errors.As(err, &pe) || pe.Code != "context_too_long" {
			t.Fatalf("err %v, want context_too_long", err)
		}
	})
	t.Run("401", func(t *testing.T) {
		t.Parallel()
		g, _ := scripted(t, status(401, ""))
		_, err := g.Generate(t.Context(), "q", nil)
		var pe *PermanentError
		if !errors.As(err, &pe) || pe.Code != "model_unauthorized" {
			t.Fatalf("err %v, want model_unauthorized", err)
		}
	})
	t.Run("gives up before the deadline", func(t *testing.T) {
		t.Parallel()
		g, calls := scripted(t, status(503, "30"))
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		start := time.Now()
		if _, err := g.Generate(ctx, "q", nil); err == nil || len(*calls) != 1 || time.Since(start) > time.Second {
			t.Fatalf("err %v after %d calls in %v: want the 503 back at once, since Retry-After passes the deadline", err, len(*calls), time.Since(start))
		}
	})
}
