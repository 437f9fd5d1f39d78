package llm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gravitycar/tollgate/internal/rag"
)

// ErrNoChoices is returned when a chat completion response holds no choices.
var ErrNoChoices = errors.New("llm: chat completion returned no choices")

// OpenAIConfig configures an [OpenAI] generator.
type OpenAIConfig struct {
	// APIKey is sent as a bearer token. It may be empty for endpoints that
	// need none.
	APIKey string
	// BaseURL is the API root including the version, such as
	// "https://api.openai.com/v1" (the default when empty).
	BaseURL string
	// Model is the chat model to call; DefaultModel when empty.
	Model string
	// MaxTokens caps the completion; 0 leaves it to the endpoint.
	MaxTokens int
	// HTTPClient makes the requests; a plain http.Client when nil.
	// Deadlines come from the context passed to Generate.
	HTTPClient *http.Client
	// Backoff tunes retries of 429, 5xx and network failures.
	Backoff Backoff
}

// OpenAI answers through an OpenAI-compatible chat completions endpoint.
// It is safe for concurrent use.
type OpenAI struct {
	client    *openai.Client
	model     string
	maxTokens int
	// capCompletion sends the cap as max_completion_tokens, for models that
	// refuse max_tokens (o-series, gpt-5 and later reasoning models).
	capCompletion bool
	backoff       Backoff
}

// NewOpenAI returns a generator for cfg. It makes no requests.
func NewOpenAI(cfg OpenAIConfig) *OpenAI {
	conf := openai.DefaultConfig(cfg.APIKey)
	if cfg.BaseURL != "" {
		conf.BaseURL = cfg.BaseURL
	}
	hc := &http.Client{}
	if cfg.HTTPClient != nil {
		c := *cfg.HTTPClient
		hc = &c
	}
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	hc.Transport = retryAfterTransport{next: next}
	conf.HTTPClient = hc
	model := cfg.Model
	if model == "" {
		model = DefaultModel
	}
	return &OpenAI{
		client:        openai.NewClientWithConfig(conf),
		model:         model,
		maxTokens:     cfg.MaxTokens,
		capCompletion: refusesMaxTokens(model, cfg.MaxTokens),
		backoff:       cfg.Backoff,
	}
}

// Model returns the configured model name.
func (g *OpenAI) Model() string { return g.model }

// Generate asks the model once (no retries) to answer question from passages
// and returns the first choice's content. Usage is copied from the response,
// never estimated; its Model is the model the response names, or the
// configured one if the response names none.
//
// Errors are wrapped: errors.As still finds an *openai.APIError (an error body
// from the endpoint) or *openai.RequestError (any other failure status), with
// the HTTP status code. When the response has no choices the error is
// ErrNoChoices and the returned Answer still carries the billed Usage.
func (g *OpenAI) Generate(ctx context.Context, question string, passages []rag.Passage) (Answer, error) {
	req := openai.ChatCompletionRequest{
		Model:    g.model,
		Messages: Messages(question, passages),
	}
	if g.capCompletion {
		req.MaxCompletionTokens = g.maxTokens
	} else {
		// Deprecated upstream for reasoning models, but the field every
		// OpenAI-compatible server (vLLM, Ollama, gateways) understands.
		req.MaxTokens = g.maxTokens //nolint:staticcheck // SA1019: see above.
	}
	resp, err := g.complete(ctx, req)
	if err != nil {
		return Answer{}, fmt.Errorf("chat completion with %s: %w", g.model, err)
	}
	usage := Usage{
		Model:            resp.Model,
		PromptTokens:     resp.Usage.PromptTokens,
		CompletionTokens: resp.Usage.CompletionTokens,
	}
	if usage.Model == "" {
		usage.Model = g.model
	}
	if d := resp.Usage.PromptTokensDetails; d != nil {
		usage.CachedPromptTokens = d.CachedTokens
	}
	if len(resp.Choices) == 0 {
		return Answer{Usage: usage}, fmt.Errorf("chat completion with %s: %w", g.model, ErrNoChoices)
	}
	return Answer{Text: resp.Choices[0].Message.Content, Usage: usage}, nil
}

// complete calls the endpoint, retrying 429, 5xx and network failures with
// exponential backoff and jitter, never sooner than the endpoint's
// Retry-After, until ctx ends. A refusal is returned at once as a
// *PermanentError.
func (g *OpenAI) complete(ctx context.Context, req openai.ChatCompletionRequest) (openai.ChatCompletionResponse, error) {
	var last error // the endpoint's last transient failure
	for attempt := 0; ; attempt++ {
		box := &retryAfterBox{}
		resp, err := g.client.CreateChatCompletion(context.WithValue(ctx, retryAfterKey{}, box), req)
		if err == nil {
			return resp, nil
		}
		transient, permanent := classify(err)
		if permanent != nil {
			return resp, permanent
		}
		if !transient || ctx.Err() != nil {
			return resp, after(err, last)
		}
		last = err
		box.mu.Lock()
		wait := g.backoff.delay(attempt, box.d)
		box.mu.Unlock()
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return resp, err // no time left for another try: the caller retries later
		}
		if !sleep(ctx, wait) {
			return resp, err
		}
	}
}

// refusesMaxTokens reports whether go-openai would refuse a request for model
// that sets max_tokens, so that the cap must go in max_completion_tokens.
// Asking the library's own validator keeps both in step.
func refusesMaxTokens(model string, maxTokens int) bool {
	if maxTokens <= 0 {
		return false
	}
	probe := openai.ChatCompletionRequest{Model: model, MaxTokens: maxTokens}
	return errors.Is(openai.NewReasoningValidator().Validate(probe), openai.ErrReasoningModelMaxTokensDeprecated)
}
