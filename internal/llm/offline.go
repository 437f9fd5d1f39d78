package llm

import (
	"context"
	"fmt"
	"strings"
	"sync"

	tiktoken "github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"
	openai "github.com/sashabaranov/go-openai"

	"github.com/gravitycar/tollgate/internal/rag"
)

// Per-message overhead of the chat format, as counted in OpenAI's cookbook
// ("How to count tokens with tiktoken") for current chat models.
const (
	tokensPerMessage = 3 // <|start|>{role}<|message|>...<|end|>
	tokensPerName    = 1 // a message's name, when set
	tokensPerReply   = 3 // every reply is primed with <|start|>assistant<|message|>
)

// tiktokenMu serializes tokenizer loading. tiktoken-go keeps its BPE loader in
// an unguarded package variable, so two NewOffline calls at once would race on
// it; this lock exists only because of that dependency's global.
var tiktokenMu sync.Mutex

// OfflineConfig configures an [Offline] generator.
type OfflineConfig struct {
	// PricedAs is the model whose tokenizer counts the tokens, and the model
	// whose prices a caller may charge offline answers at. DefaultModel when
	// empty. Usage.Model stays OfflineModel either way.
	PricedAs string
}

// Offline answers without a network: it extracts the passage sentences that
// best match the question, and counts tokens with a real tokenizer. It is
// safe for concurrent use, and deterministic.
type Offline struct {
	enc      *tiktoken.Tiktoken
	pricedAs string
}

// NewOffline returns an offline generator that counts tokens like DefaultModel.
// It loads the tokenizer from data embedded in the binary, which takes a
// moment: build one and share it.
func NewOffline() (*Offline, error) {
	return NewOfflineWith(OfflineConfig{})
}

// NewOfflineWith returns an offline generator configured by cfg.
func NewOfflineWith(cfg OfflineConfig) (*Offline, error) {
	model := cfg.PricedAs
	if model == "" {
		model = DefaultModel
	}
	enc, err := loadEncoding(model)
	if err != nil {
		return nil, fmt.Errorf("loading tokenizer for %s: %w", model, err)
	}
	return &Offline{enc: enc, pricedAs: model}, nil
}

// PricedAs returns the model whose tokenizer the generator uses.
func (g *Offline) PricedAs() string { return g.pricedAs }

// Generate answers question with up to three sentences from passages that
// share the most (rarest) terms with it, each followed by the citation of its
// passage, like [2]; when no sentence shares a term it answers NotFound.
//
// Usage.Model is OfflineModel; PromptTokens counts Messages(question,
// passages) as a chat prompt, CompletionTokens the answer text.
func (g *Offline) Generate(ctx context.Context, question string, passages []rag.Passage) (Answer, error) {
	if err := ctx.Err(); err != nil {
		return Answer{}, fmt.Errorf("offline answer: %w", err)
	}
	text := extract(question, passages)
	return Answer{
		Text: text,
		Usage: Usage{
			Model:            OfflineModel,
			PromptTokens:     g.countMessages(Messages(question, passages)),
			CompletionTokens: g.CountTokens(text),
		},
	}, nil
}

// CountTokens returns the number of tokens of s. Special-token markers in s
// count as ordinary text, as they do in a chat message's content.
func (g *Offline) CountTokens(s string) int {
	if s == "" {
		return 0
	}
	return len(g.enc.EncodeOrdinary(s))
}

// countMessages counts msgs as a chat prompt: each message's role, name and
// content plus the format's per-message and reply overhead.
func (g *Offline) countMessages(msgs []openai.ChatCompletionMessage) int {
	n := tokensPerReply
	for _, m := range msgs {
		n += tokensPerMessage + g.CountTokens(m.Role) + g.CountTokens(m.Content)
		if m.Name != "" {
			n += tokensPerName + g.CountTokens(m.Name)
		}
	}
	return n
}

// loadEncoding loads the tokenizer of model from the embedded BPE files,
// falling back to fallbackEncoding for models tiktoken-go does not know.
func loadEncoding(model string) (*tiktoken.Tiktoken, error) {
	tiktokenMu.Lock()
	defer tiktokenMu.Unlock()
	tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader())
	if enc, err := tiktoken.EncodingForModel(model); err == nil {
		return enc, nil
	}
	return tiktoken.GetEncoding(fallbackEncoding(model))
}

// fallbackEncoding names the encoding for a model tiktoken-go has no entry
// for: o200k_base for the GPT-4o, GPT-4.1, GPT-5 and o-series families,
// cl100k_base for everything else.
func fallbackEncoding(model string) string {
	m := strings.ToLower(model)
	if i := strings.LastIndexByte(m, '/'); i >= 0 { // "openai/gpt-4o" as routers name it
		m = m[i+1:]
	}
	for _, prefix := range []string{"gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-6"} {
		if strings.HasPrefix(m, prefix) {
			return tiktoken.MODEL_O200K_BASE
		}
	}
	if len(m) > 1 && m[0] == 'o' && m[1] >= '0' && m[1] <= '9' { // o1, o3-mini, o4-mini
		return tiktoken.MODEL_O200K_BASE
	}
	return tiktoken.MODEL_CL100K_BASE
}
