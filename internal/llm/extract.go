package llm

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/gravitycar/tollgate/internal/rag"
)

// NotFound is the offline answer when no passage sentence matches the question.
const NotFound = "I could not find this in the documents."

const (
	maxSentences     = 3 // sentences in an offline answer
	minSentenceWords = 3 // shorter fragments are not answers
)

// candidate is one passage sentence that might answer the question.
type candidate struct {
	text    string
	passage int      // 1-based number of its passage, as cited
	terms   []string // its distinct stemmed terms
	score   float64
}

// extract builds the offline answer: the sentences that share the most
// question terms, weighted by how rare each term is among all the sentences,
// best first, each followed by its passage citation. Sentences scoring under
// half the best are left out, as are duplicates.
func extract(question string, passages []rag.Passage) string {
	want := distinctTerms(question)
	if len(want) == 0 {
		return NotFound
	}

	var cands []candidate
	seen := make(map[string]bool)
	df := make(map[string]int) // sentences containing each term
	for i, p := range passages {
		for _, s := range sentences(p.Text) {
			key := strings.ToLower(s)
			if seen[key] {
				continue
			}
			seen[key] = true
			c := candidate{text: s, passage: i + 1, terms: distinctTerms(s)}
			for _, t := range c.terms {
				df[t]++
			}
			cands = append(cands, c)
		}
	}

	best := 0.0
	n := float64(len(cands))
	for i := range cands {
		c := &cands[i]
		for _, w := range want {
			if slices.Contains(c.terms, w) {
				c.score += math.Log(1 + n/float64(df[w]))
			}
		}
		best = max(best, c.score)
	}
	if best == 0 {
		return NotFound
	}

	cands = slices.DeleteFunc(cands, func(c candidate) bool { return c.score < best/2 })
	// Stable: equal scores keep passage (retrieval) order, then sentence order.
	slices.SortStableFunc(cands, func(a, b candidate) int { return cmp.Compare(b.score, a.score) })

	var b strings.Builder
	for i, c := range cands[:min(len(cands), maxSentences)] {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(c.text + " [" + strconv.Itoa(c.passage) + "]")
	}
	return b.String()
}

// sentences splits Markdown or plain text into sentences. Paragraphs (lines
// joined until a blank line), list items and block quotes are split at
// sentence ends; headings, fenced code and fragments under minSentenceWords
// are dropped.
func sentences(text string) []string {
	var out, para []string
	flush := func() {
		if len(para) > 0 {
			out = append(out, splitSentences(strings.Join(para, " "))...)
			para = para[:0]
		}
	}
	inCode, inQuote := false, false
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "```") || strings.HasPrefix(line, "~~~"):
			flush()
			inCode = !inCode
		case inCode:
		case line == "":
			flush()
		case strings.HasPrefix(line, "#"):
			flush()
		default:
			if quote := strings.HasPrefix(line, ">"); quote != inQuote {
				flush() // a block quote starts or ends a paragraph
				inQuote = quote
			}
			line = strings.TrimSpace(strings.TrimLeft(line, ">"))
			if item, ok := listItem(line); ok {
				flush()
				line = item
			}
			para = append(para, line)
		}
	}
	flush()
	return out
}

// listItem returns the text of a Markdown list item line ("- x", "* x",
// "+ x", "1. x", "1) x").
func listItem(line string) (string, bool) {
	for _, bullet := range []string{"- ", "* ", "+ "} {
		if rest, ok := strings.CutPrefix(line, bullet); ok {
			return strings.TrimSpace(rest), true
		}
	}
	digits := strings.IndexFunc(line, func(r rune) bool { return r < '0' || r > '9' })
	if digits > 0 && len(line) > digits+1 && (line[digits] == '.' || line[digits] == ')') && line[digits+1] == ' ' {
		return strings.TrimSpace(line[digits+2:]), true
	}
	return line, false
}

// splitSentences splits s after '.', '!' or '?' followed by a space or the
// end, except after initials and abbreviations such as "e.g.".
func splitSentences(s string) []string {
	var out []string
	keep := func(sent string) {
		if sent = strings.TrimSpace(sent); len(strings.Fields(sent)) >= minSentenceWords {
			out = append(out, sent)
		}
	}
	start := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '.' && c != '!' && c != '?' {
			continue
		}
		if i+1 < len(s) && s[i+1] != ' ' {
			continue
		}
		if s[i] == '.' && isAbbreviation(s[start:i]) {
			continue
		}
		keep(s[start : i+1])
		start = i + 1
	}
	keep(s[start:])
	return out
}

// isAbbreviation reports whether the word ending text (before a period) is
// an initial or an abbreviation such as "e.g" or "i.e".
func isAbbreviation(text string) bool {
	word := text[strings.LastIndexByte(text, ' ')+1:]
	return len(word) == 1 || strings.Contains(word, ".")
}

// distinctTerms returns the distinct stemmed terms of s, in order of first
// appearance: lowercase words of letters and digits, stop words and single
// letters left out.
func distinctTerms(s string) []string {
	var out []string
	for _, w := range strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	}) {
		if isStopWord(w) || (len(w) == 1 && !unicode.IsDigit(rune(w[0]))) {
			continue
		}
		if t := stem(w); !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// stem strips common English inflections so that "refunds", "refunded" and
// "refunding" match, and "use", "uses", "used" and "using" too. It is
// deliberately crude: all it must do is map a question's words and a
// passage's words to the same stem.
func stem(w string) string {
	cut := func(suffix string) bool {
		r, ok := strings.CutSuffix(w, suffix)
		if !ok || len(r) < 2 {
			return false
		}
		w = r
		return true
	}
	if cut("ies") {
		return w + "y"
	}
	switch {
	case strings.HasSuffix(w, "eed"): // need, speed: not a past tense
	case cut("ing"):
	case strings.HasSuffix(w, "ed"):
		cut("d") // used -> use, refunded -> refunde; the "e" goes below
	}
	if !strings.HasSuffix(w, "ss") && !strings.HasSuffix(w, "us") && !strings.HasSuffix(w, "is") {
		cut("s")
	}
	cut("e")
	return w
}

// isStopWord reports whether w is too common to tell sentences apart.
func isStopWord(w string) bool {
	switch w {
	case "a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
		"be", "been", "before", "being", "both", "but", "by",
		"can", "could", "did", "do", "does", "doing", "don", "down", "during",
		"each", "few", "for", "from", "further",
		"get", "gets", "got", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how",
		"i", "if", "in", "into", "is", "it", "its", "itself", "just",
		"many", "me", "more", "most", "much", "must", "my",
		"no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "out", "over", "own",
		"please", "same", "shall", "she", "should", "so", "some", "such",
		"tell", "than", "that", "the", "their", "theirs", "them", "then", "there", "these", "they", "this", "those",
		"through", "to", "too", "under", "until", "up", "us", "very",
		"was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would",
		"you", "your", "yours":
		return true
	}
	return false
}
