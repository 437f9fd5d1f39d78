package rag

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ChunksBucket is the JetStream key-value bucket that holds every chunk,
// keyed by [Chunk.ID]. It is the source of truth for retrieval: ingestion
// writes to it and every [Index] follows it.
const ChunksBucket = "chunks"

// DefaultMaxChars is the chunk size limit [Split] uses when given 0.
const DefaultMaxChars = 1200

// sectionSep joins the headings of a section path.
const sectionSep = " > "

// Chunk is one retrievable piece of a document, stored in [ChunksBucket]
// as JSON.
type Chunk struct {
	ID      string `json:"id"`      // ChunkID(Text), also the KV key: the same text in two documents is stored once
	Title   string `json:"title"`   // the document's first H1, or its file name
	Source  string `json:"source"`  // path of the document, relative to the ingested folder
	Section string `json:"section"` // heading path below the title, joined with " > "
	Text    string `json:"text"`    // the chunk's text, paragraphs separated by blank lines
}

// ChunkID returns the ID of a chunk with this text: the first 32 hex digits
// of the SHA-256 of the text with all runs of white space collapsed to one
// space, so re-wrapping a paragraph does not create a new chunk.
func ChunkID(text string) string {
	sum := sha256.Sum256([]byte(strings.Join(strings.Fields(text), " ")))
	return hex.EncodeToString(sum[:16])
}

// section is the body of a document under one heading path.
type section struct {
	path  []headingLine // outermost first
	paras []string      // paragraphs, trimmed, never empty
}

// headingLine is a Markdown heading: its level (1 to 6) and text.
type headingLine struct {
	level int
	text  string
}

// Split cuts a Markdown or plain-text document into chunks: first by
// Markdown ATX headings (# to ######, outside fenced code blocks), then by
// size, so that no chunk's Text exceeds maxChars characters (runes;
// [DefaultMaxChars] when maxChars <= 0). Within a section, paragraphs are
// packed together while they fit; a paragraph that does not fit alone is
// cut at sentence ends, and a sentence that does not fit at the last space
// before the limit (or at the limit itself).
//
// Each chunk's Title is the document's first level-1 heading, or else the
// file name of source without its extension; Section is the heading path
// below that title. Heading lines themselves are not part of Text.
// Sections without text are dropped. The result is deterministic.
func Split(source string, content []byte, maxChars int) []Chunk {
	if maxChars <= 0 {
		maxChars = DefaultMaxChars
	}
	title, sections := parseMarkdown(content)
	if title == "" {
		base := path.Base(strings.ReplaceAll(source, `\`, "/"))
		title = strings.TrimSuffix(base, path.Ext(base))
	}

	var chunks []Chunk
	for _, s := range sections {
		var names []string
		for i, h := range s.path {
			if i == 0 && h == (headingLine{1, title}) {
				continue // the title is not part of the section path
			}
			names = append(names, h.text)
		}
		for _, text := range pack(s.paras, maxChars) {
			chunks = append(chunks, Chunk{
				ID:      ChunkID(text),
				Title:   title,
				Source:  source,
				Section: strings.Join(names, sectionSep),
				Text:    text,
			})
		}
	}
	return chunks
}

// parseMarkdown returns the first H1's text and the document's sections.
func parseMarkdown(content []byte) (title string, sections []section) {
	content = bytes.TrimPrefix(content, []byte("\ufeff"))
	var (
		cur   = section{}
		para  []string
		fence string // the fence that opened the current code block, if any
	)
	endPara := func() {
		if p := strings.TrimSpace(strings.Join(para, "\n")); p != "" {
			cur.paras = append(cur.paras, p)
		}
		para = para[:0]
	}
	endSection := func() {
		endPara()
		if len(cur.paras) > 0 {
			sections = append(sections, cur)
		}
	}

	sc := bufio.NewScanner(bytes.NewReader(content))
	sc.Buffer(make([]byte, 0, 64*1024), len(content)+1) // no line is too long, so Scan cannot fail
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " \t\r")
		trimmed := strings.TrimLeft(line, " ")
		switch {
		case fence != "":
			para = append(para, line)
			if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]) == "" {
				fence = ""
			}
		case strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~"):
			fence = trimmed[:3]
			para = append(para, line)
		case line == "":
			endPara()
		default:
			level, text, ok := heading(line)
			if !ok {
				para = append(para, line)
				continue
			}
			endSection()
			if level == 1 && title == "" {
				title = text
			}
			var path []headingLine
			for _, h := range cur.path {
				if h.level < level {
					path = append(path, h)
				}
			}
			cur = section{path: append(path, headingLine{level, text})}
		}
	}
	endSection()
	return title, sections
}

// heading reports whether line is an ATX heading, and its level and text.
func heading(line string) (level int, text string, ok bool) {
	if len(line)-len(strings.TrimLeft(line, " ")) > 3 {
		return 0, "", false // indented code
	}
	line = strings.TrimLeft(line, " ")
	level = len(line) - len(strings.TrimLeft(line, "#"))
	if level == 0 || level > 6 {
		return 0, "", false
	}
	rest := line[level:]
	if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
		return 0, "", false // "#hashtag", not a heading
	}
	text = strings.TrimSpace(rest)
	// An optional closing sequence of #s is not part of the text.
	if t := strings.TrimRight(text, "#"); t != text && (t == "" || strings.HasSuffix(t, " ")) {
		text = strings.TrimSpace(t)
	}
	return level, text, text != ""
}

// pack joins paragraphs into texts of at most maxChars runes, cutting the
// paragraphs that are too long on their own.
func pack(paras []string, maxChars int) []string {
	var pieces []string
	for _, p := range paras {
		if runes(p) <= maxChars {
			pieces = append(pieces, p)
			continue
		}
		for _, s := range packWith(sentences(p), " ", maxChars) {
			pieces = append(pieces, hardCut(s, maxChars)...)
		}
	}
	return packWith(pieces, "\n\n", maxChars)
}

// packWith greedily joins consecutive parts with sep while the result stays
// within maxChars runes. Parts longer than maxChars are passed on alone.
func packWith(parts []string, sep string, maxChars int) []string {
	var (
		out []string
		cur strings.Builder
		n   int // runes in cur
	)
	for _, p := range parts {
		pn := runes(p)
		if n > 0 && n+len(sep)+pn > maxChars {
			out = append(out, cur.String())
			cur.Reset()
			n = 0
		}
		if n > 0 {
			cur.WriteString(sep)
			n += len(sep)
		}
		cur.WriteString(p)
		n += pn
	}
	if n > 0 {
		out = append(out, cur.String())
	}
	return out
}

// sentences splits a paragraph after each '.', '!' or '?' that is followed
// by white space. The pieces are trimmed and joined again with one space.
func sentences(p string) []string {
	var out []string
	start := 0
	for i, r := range p {
		if r != '.' && r != '!' && r != '?' {
			continue
		}
		next, _ := utf8.DecodeRuneInString(p[i+1:])
		if next == utf8.RuneError || !unicode.IsSpace(next) {
			continue
		}
		if s := strings.TrimSpace(p[start : i+1]); s != "" {
			out = append(out, s)
		}
		start = i + 1
	}
	if s := strings.TrimSpace(p[start:]); s != "" {
		out = append(out, s)
	}
	return out
}

// hardCut cuts s into pieces of at most maxChars runes, at the last white
// space before the limit when there is one in the second half of the piece.
func hardCut(s string, maxChars int) []string {
	var out []string
	for runes(s) > maxChars {
		end := byteOffset(s, maxChars)
		cut := end
		if sp := strings.LastIndexFunc(s[:end], unicode.IsSpace); sp > 0 && runes(s[:sp]) >= maxChars/2 {
			cut = sp
		}
		if piece := strings.TrimSpace(s[:cut]); piece != "" {
			out = append(out, piece)
		}
		s = strings.TrimSpace(s[cut:])
	}
	if s != "" {
		out = append(out, s)
	}
	return out
}

// byteOffset returns the byte offset of the n-th rune of s.
func byteOffset(s string, n int) int {
	for i := range s {
		if n == 0 {
			return i
		}
		n--
	}
	return len(s)
}

func runes(s string) int { return utf8.RuneCountInString(s) }
