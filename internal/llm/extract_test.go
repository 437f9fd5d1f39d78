package llm

import (
	"slices"
	"testing"
)

func TestStem(t *testing.T) {
	t.Parallel()
	for _, group := range [][]string{
		{"refund", "refunds", "refunded", "refunding"},
		{"use", "uses", "used", "using"},
		{"limit", "limits", "limited"},
		{"policy", "policies"},
		{"cache", "caches", "cached", "caching"},
		{"class", "classes"},
		{"need", "needs"},
		{"status"},
	} {
		for _, w := range group[1:] {
			if stem(w) != stem(group[0]) {
				t.Errorf("stem(%q) = %q, stem(%q) = %q: want equal", w, stem(w), group[0], stem(group[0]))
			}
		}
	}
	if stem("status") != "status" {
		t.Errorf("stem(status) = %q", stem("status"))
	}
}

func TestDistinctTerms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []string
	}{
		{"How do I get a REFUND for my refunds?", []string{"refund"}},
		{"The user's 15 tokens, e.g. per-minute", []string{"user", "15", "token", "per", "minut"}},
		{"what is it?", nil},
	}
	for _, tt := range tests {
		if got := distinctTerms(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("distinctTerms(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSentences(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{
			name: "paragraph wrapped over lines",
			in:   "Refunds take 14 days. They go back\nto the original card! Is that fast?",
			want: []string{"Refunds take 14 days.", "They go back to the original card!", "Is that fast?"},
		},
		{
			name: "headings, code and short fragments dropped",
			in:   "# Refund policy\n\nRefunds take 14 days.\n\n```\nrefund --all now please\n```\nOk.",
			want: []string{"Refunds take 14 days."},
		},
		{
			name: "list items are their own sentences",
			in:   "Steps to follow:\n- Open a support ticket\n* Attach the receipt\n2) Wait for an email from us\n> Quoted text is kept too.",
			want: []string{"Steps to follow:", "Open a support ticket", "Attach the receipt", "Wait for an email from us", "Quoted text is kept too."},
		},
		{
			name: "abbreviations and decimals do not end a sentence",
			in:   "Costs are tiny, e.g. 0.15 dollars per million tokens. Ask J. Smith for more.",
			want: []string{"Costs are tiny, e.g. 0.15 dollars per million tokens.", "Ask J. Smith for more."},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := sentences(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("sentences() =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}
