package llm

import (
	"strconv"
	"strings"
	"unicode/utf8"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gravitycar/tollgate/internal/rag"
)

// systemPrompt tells the model to stay within the passages and cite them.
const systemPrompt = `You answer questions using only the numbered passages in the user's message.
Cite every passage you use by its number in square brackets, like [1] or [2], right after the statement it supports.
If the passages do not contain the answer, say that you do not know; do not guess and do not use outside knowledge.
Answer concisely.`

// Limits on what one passage adds to a prompt, so that the prompt of any
// question has a known upper bound (PromptTokenBound) before it is asked.
const (
	MaxPassageTextBytes = 2400 // longer passage text is cut, on a character boundary
	maxPassageMetaBytes = 240  // title, source and section, each cut to a third of this
)

// PromptTokenBound is an upper bound on the prompt tokens of question with
// k passages. Every BPE token covers at least one byte, so a prompt never
// has more tokens than bytes; the bound adds the framing and the per-message
// overhead of the chat format.
func PromptTokenBound(question string, k int) int {
	const framing = 64 // "[n] Title: ", "Source: ", "Section: ", newlines
	const overhead = 3*2 + 3 + 16
	return len(systemPrompt) + len("Passages:\n(none)\n\nQuestion: ") + len(question) +
		k*(MaxPassageTextBytes+maxPassageMetaBytes+framing) + overhead
}

// Messages builds the chat prompt for question: a system message that
// restricts the model to the passages and asks for citations like [1], and a
// user message with the passages numbered [1]..[n] in the given order (title,
// source, section if any, text) followed by the question.
func Messages(question string, passages []rag.Passage) []openai.ChatCompletionMessage {
	return []openai.ChatCompletionMessage{
		{Role: openai.ChatMessageRoleSystem, Content: systemPrompt},
		{Role: openai.ChatMessageRoleUser, Content: userPrompt(question, passages)},
	}
}

// userPrompt renders the numbered passages and the question.
func userPrompt(question string, passages []rag.Passage) string {
	var b strings.Builder
	b.WriteString("Passages:\n")
	if len(passages) == 0 {
		b.WriteString("(none)\n")
	}
	for i, p := range passages {
		b.WriteString("\n[" + strconv.Itoa(i+1) + "] Title: " + cut(p.Title, maxPassageMetaBytes/3) + "\n")
		b.WriteString("Source: " + cut(p.Source, maxPassageMetaBytes/3) + "\n")
		if p.Section != "" {
			b.WriteString("Section: " + cut(p.Section, maxPassageMetaBytes/3) + "\n")
		}
		b.WriteString(cut(strings.TrimSpace(p.Text), MaxPassageTextBytes) + "\n")
	}
	b.WriteString("\nQuestion: " + strings.TrimSpace(question))
	return b.String()
}

// cut returns at most n bytes of s, ending on a character boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
