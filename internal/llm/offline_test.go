package llm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	tiktoken "github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"

	"github.com/gravitycar/tollgate/internal/rag"
)

// Tests that load tokenizers do not run in parallel: tiktoken-go's loader is
// a package variable that the reference tokenizer below sets too.

func newOffline(t *testing.T, cfg OfflineConfig) *Offline {
	t.Helper()
	g, err := NewOfflineWith(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// reference loads encoding by name, independently of the model lookup in
// NewOffline.
func reference(t *testing.T, encoding string) *tiktoken.Tiktoken {
	t.Helper()
	tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader())
	enc, err := tiktoken.GetEncoding(encoding)
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

// cookbookCount counts a chat prompt as OpenAI's cookbook does for current
// models: 3 tokens per message plus its role and content, 3 for the reply.
func cookbookCount(enc *tiktoken.Tiktoken, question string, passages []rag.Passage) int {
	n := 3
	for _, m := range Messages(question, passages) {
		n += 3 + len(enc.Encode(m.Role, nil, nil)) + len(enc.Encode(m.Content, nil, nil))
	}
	return n
}

func docs() []rag.Passage {
	return []rag.Passage{
		{ID: "limits", Title: "Rate limits", Source: "docs/limits.md", Section: "Buckets", Text: `# Rate limits

Every user has a token bucket that holds fifteen tokens.
The bucket refills at one token a minute. Each accepted question takes one token.`},
		{ID: "refunds", Title: "Refunds", Source: "docs/refunds.md", Text: `## Refunds

We issue refunds within 14 days of the request. Refunds go back to the original card.

- Contact support to start a refund.`},
		{ID: "budget", Title: "Budget", Source: "docs/budget.md", Text: "The daily budget is one dollar. The owner gets an email at 80% of it."},
	}
}

func TestOfflineCitesPassage(t *testing.T) {
	g := newOffline(t, OfflineConfig{})
	tests := []struct {
		question string
		want     string // a sentence the answer must start with
		absent   []string
	}{
		{"How long until I get my refund?", "We issue refunds within 14 days of the request. [2]", []string{"[1]", "[3]"}},
		{"How fast does the token bucket refill?", "The bucket refills at one token a minute. [1]", []string{"[2]", "[3]"}},
		{"When does the owner get emailed?", "The owner gets an email at 80% of it. [3]", []string{"[1]", "[2]"}},
	}
	for _, tt := range tests {
		t.Run(tt.question, func(t *testing.T) {
			ans, err := g.Generate(t.Context(), tt.question, docs())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(ans.Text, tt.want) {
				t.Errorf("answer %q does not start with %q", ans.Text, tt.want)
			}
			for _, a := range tt.absent {
				if strings.Contains(ans.Text, a) {
					t.Errorf("answer %q cites %s", ans.Text, a)
				}
			}
			if ans.Usage.Model != OfflineModel {
				t.Errorf("Usage.Model = %q, want %q", ans.Usage.Model, OfflineModel)
			}
		})
	}
}

func TestOfflineAnswerShape(t *testing.T) {
	g := newOffline(t, OfflineConfig{})
	// Every sentence matches "refund"; the answer keeps at most three, each
	// cited, and never repeats one.
	passages := []rag.Passage{
		{Text: "Refunds are manual. Refunds are manual. Refunds need a ticket."},
		{Text: "A refund takes a week. Refunds are manual."},
		{Text: "Refund requests are logged."},
	}
	ans, err := g.Generate(t.Context(), "refunds", passages)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(ans.Text, "] "); n != maxSentences-1 {
		t.Errorf("answer %q has %d sentences, want %d", ans.Text, n+1, maxSentences)
	}
	if strings.Count(ans.Text, "Refunds are manual.") != 1 {
		t.Errorf("answer %q repeats a sentence", ans.Text)
	}
	if want := "Refunds are manual. [1] Refunds need a ticket. [1] A refund takes a week. [2]"; ans.Text != want {
		t.Errorf("answer %q, want %q (score ties keep passage order)", ans.Text, want)
	}
}

func TestOfflineNotFound(t *testing.T) {
	g := newOffline(t, OfflineConfig{})
	for _, tt := range []struct {
		name     string
		question string
		passages []rag.Passage
	}{
		{"no matching term", "What is quantum chromodynamics?", docs()},
		{"only stop words", "What is it and how does it do that?", docs()},
		{"no passages", "How long until I get my refund?", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ans, err := g.Generate(t.Context(), tt.question, tt.passages)
			if err != nil {
				t.Fatal(err)
			}
			if ans.Text != NotFound {
				t.Errorf("answer %q, want %q", ans.Text, NotFound)
			}
			if ans.Usage.CompletionTokens != g.CountTokens(NotFound) || ans.Usage.PromptTokens == 0 {
				t.Errorf("usage %+v: the prompt and the answer still count", ans.Usage)
			}
		})
	}
}

func TestOfflineUsageMatchesTokenizer(t *testing.T) {
	g := newOffline(t, OfflineConfig{}) // DefaultModel, gpt-4o-mini: o200k_base
	enc := reference(t, "o200k_base")
	const question = "How long until I get my refund?"

	ans, err := g.Generate(t.Context(), question, docs())
	if err != nil {
		t.Fatal(err)
	}
	want := Usage{
		Model:            OfflineModel,
		PromptTokens:     cookbookCount(enc, question, docs()),
		CompletionTokens: len(enc.Encode(ans.Text, nil, nil)),
	}
	if ans.Usage != want {
		t.Errorf("Usage = %+v, want %+v", ans.Usage, want)
	}
	for _, s := range []string{"", "hello world", "Tollgate meters déjà-vu 🚦 questions", "<|endoftext|> is plain text here"} {
		if got, want := g.CountTokens(s), len(enc.EncodeOrdinary(s)); got != want {
			t.Errorf("CountTokens(%q) = %d, want %d", s, got, want)
		}
	}
}

func TestOfflinePromptTokensGrow(t *testing.T) {
	g := newOffline(t, OfflineConfig{})
	prev := 0
	for n := range len(docs()) + 1 {
		ans, err := g.Generate(t.Context(), "How long until I get my refund?", docs()[:n])
		if err != nil {
			t.Fatal(err)
		}
		if ans.Usage.PromptTokens <= prev {
			t.Errorf("%d passages: %d prompt tokens, not more than %d with one fewer", n, ans.Usage.PromptTokens, prev)
		}
		prev = ans.Usage.PromptTokens
	}
}

func TestOfflinePricedAs(t *testing.T) {
	// A model that counts with cl100k_base, and one tiktoken-go does not know.
	const s = "Tollgate mide las preguntas: 1 234 jetons, 費用は０.０１ドル, Привет мир."
	cl100k, o200k := reference(t, "cl100k_base"), reference(t, "o200k_base")
	if len(cl100k.EncodeOrdinary(s)) == len(o200k.EncodeOrdinary(s)) {
		t.Fatal("test string counts the same in both encodings; pick another")
	}
	for _, tt := range []struct {
		model string
		enc   *tiktoken.Tiktoken
	}{
		{"gpt-3.5-turbo", cl100k},
		{"o4-mini", o200k},
	} {
		g := newOffline(t, OfflineConfig{PricedAs: tt.model})
		if g.PricedAs() != tt.model {
			t.Errorf("PricedAs() = %q, want %q", g.PricedAs(), tt.model)
		}
		if got, want := g.CountTokens(s), len(tt.enc.EncodeOrdinary(s)); got != want {
			t.Errorf("%s: CountTokens = %d, want %d", tt.model, got, want)
		}
	}
}

func TestFallbackEncoding(t *testing.T) {
	t.Parallel()
	for model, want := range map[string]string{
		"gpt-4o-mini":            "o200k_base",
		"openai/gpt-4o":          "o200k_base",
		"gpt-4.1-nano":           "o200k_base",
		"gpt-5-mini":             "o200k_base",
		"o1":                     "o200k_base",
		"o3-mini":                "o200k_base",
		"gpt-4-turbo":            "cl100k_base",
		"gpt-3.5-turbo":          "cl100k_base",
		"llama-3.1-8b-instruct":  "cl100k_base",
		"ollama":                 "cl100k_base",
		"mistral-small-2503":     "cl100k_base",
		"text-embedding-3-small": "cl100k_base",
	} {
		if got := fallbackEncoding(model); got != want {
			t.Errorf("fallbackEncoding(%q) = %q, want %q", model, got, want)
		}
	}
}

func TestOfflineConcurrent(t *testing.T) {
	g := newOffline(t, OfflineConfig{})
	questions := []string{
		"How long until I get my refund?",
		"How fast does the token bucket refill?",
		"What is quantum chromodynamics?",
	}
	want := make([]Answer, len(questions))
	for i, q := range questions {
		var err error
		if want[i], err = g.Generate(t.Context(), q, docs()); err != nil {
			t.Fatal(err)
		}
	}

	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range 20 {
				q := (w + i) % len(questions)
				got, err := g.Generate(context.Background(), questions[q], docs())
				if err == nil && got != want[q] {
					err = fmt.Errorf("question %d: got %+v, want %+v", q, got, want[q])
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestOfflineCanceled(t *testing.T) {
	g := newOffline(t, OfflineConfig{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := g.Generate(ctx, "refund", docs()); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}
