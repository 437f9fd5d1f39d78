package llm

import (
	"strings"
	"testing"
	"unicode/utf8"

	openai "github.com/sashabaranov/go-openai"

	"github.com/gravitycar/tollgate/internal/rag"
)

func TestMessages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		question string
		passages []rag.Passage
		want     []string // substrings of the user message, in this order
		absent   []string
	}{
		{
			name:     "passages numbered in order then question",
			question: "How are refunds issued?",
			passages: []rag.Passage{
				{Title: "Limits", Source: "docs/limits.md", Text: "Fifteen requests at once."},
				{Title: "Refunds", Source: "docs/refunds.md", Section: "Timing", Text: "  Refunds take 14 days.\n"},
				{Title: "Budget", Source: "docs/budget.md", Text: "One dollar a day."},
			},
			want: []string{
				"[1] Title: Limits\n", "Source: docs/limits.md\n", "Fifteen requests at once.\n",
				"[2] Title: Refunds\n", "Source: docs/refunds.md\n", "Section: Timing\n", "Refunds take 14 days.\n",
				"[3] Title: Budget\n", "Source: docs/budget.md\n", "One dollar a day.\n",
				"Question: How are refunds issued?",
			},
			absent: []string{"[4]", "Section: \n"},
		},
		{
			name:     "no passages",
			question: "  Anything?  ",
			want:     []string{"(none)", "Question: Anything?"},
			absent:   []string{"[1]"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msgs := Messages(tt.question, tt.passages)
			if len(msgs) != 2 {
				t.Fatalf("got %d messages, want 2", len(msgs))
			}

			if msgs[0].Role != openai.ChatMessageRoleSystem {
				t.Errorf("first message role = %q, want system", msgs[0].Role)
			}
			sys := strings.ToLower(msgs[0].Content)
			for _, w := range []string{"only the numbered passages", "cite", "[1]", "do not know"} {
				if !strings.Contains(sys, w) {
					t.Errorf("system prompt lacks %q:\n%s", w, msgs[0].Content)
				}
			}

			if msgs[1].Role != openai.ChatMessageRoleUser {
				t.Errorf("second message role = %q, want user", msgs[1].Role)
			}
			user := msgs[1].Content
			rest := user
			for _, w := range tt.want {
				_, after, ok := strings.Cut(rest, w)
				if !ok {
					t.Fatalf("%q missing or out of order in user message:\n%s", w, user)
				}
				rest = after
			}
			if want := "Question: " + strings.TrimSpace(tt.question); !strings.HasSuffix(user, want) {
				t.Errorf("user message does not end with %q:\n%s", want, user)
			}
			for _, a := range tt.absent {
				if strings.Contains(user, a) {
					t.Errorf("user message contains %q:\n%s", a, user)
				}
			}
		})
	}
}

func TestPromptTokenBound(t *testing.T) {
	g, err := NewOffline()
	if err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("漢字とかな ", 2000) // multi-byte text, far over the passage cap
	long := strings.Repeat("x", 1000)
	for _, k := range []int{0, 1, 5, 20} {
		var ps []rag.Passage
		for range k {
			ps = append(ps, rag.Passage{Title: long, Source: long, Section: long, Text: huge})
		}
		question := strings.Repeat("why? ", 400)
		var tokens int
		for _, m := range Messages(question, ps) {
			tokens += g.CountTokens(m.Content) + 3
		}
		tokens += 3
		if bound := PromptTokenBound(question, k); tokens > bound {
			t.Errorf("k=%d: prompt has %d tokens, bound says at most %d", k, tokens, bound)
		}
		if len(ps) > 0 && !utf8.ValidString(Messages(question, ps)[1].Content) {
			t.Errorf("k=%d: cutting passages broke a character", k)
		}
	}
}
