// Package llm turns a question and the passages retrieved for it into an
// answer, and reports the tokens that answer cost.
//
// Two generators share one prompt ([Messages]) and one result type ([Answer]):
// [OpenAI] calls any OpenAI-compatible chat completions endpoint and copies the
// usage the endpoint reports; [Offline] needs no network and no key: it answers
// with the passage sentences that best match the question and counts tokens
// with a real tokenizer, so the budget works the same way without a provider.
package llm

// DefaultModel is the model used when none is configured, for calls and for
// choosing the offline tokenizer.
const DefaultModel = "gpt-4o-mini"

// OfflineModel is the Usage.Model of answers from the offline generator.
const OfflineModel = "offline"

// Usage is the token usage of one answer.
type Usage struct {
	Model              string `json:"model"`
	PromptTokens       int    `json:"prompt_tokens"`
	CachedPromptTokens int    `json:"cached_prompt_tokens"`
	CompletionTokens   int    `json:"completion_tokens"`
}

// Answer is a generated answer with the usage it cost.
type Answer struct {
	Text  string
	Usage Usage
}
