package llm

import (
	"strconv"
	"strings"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gravitycar/tollgate/internal/rag"
)

// systemPrompt tells the model to stay within the passages and cite them.
const systemPrompt = `You answer questions using only the numbered passages in the user's message.
Cite every passage you use by its number in square brackets, like [1] or [2], right after the statement it supports.
If the passages do not contain the answer, say that you do not know; do not guess and do not use outside knowledge.
Answer concisely.`

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
		b.WriteString("\n[" + strconv.Itoa(i+1) + "] Title: " + p.Title + "\n")
		b.WriteString("Source: " + p.Source + "\n")
		if p.Section != "" {
			b.WriteString("Section: " + p.Section + "\n")
		}
		b.WriteString(strings.TrimSpace(p.Text) + "\n")
	}
	b.WriteString("\nQuestion: " + strings.TrimSpace(question))
	return b.String()
}
