package rag

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// piece is the part of a Chunk a Split case checks; IDs are checked apart.
type piece struct{ Title, Section, Text string }

func pieces(chunks []Chunk) []piece {
	out := make([]piece, len(chunks))
	for i, c := range chunks {
		out[i] = piece{c.Title, c.Section, c.Text}
	}
	return out
}

func TestSplit(t *testing.T) {
	t.Parallel()
	para := func(c byte, n int) string { return strings.Repeat(string(c), n) }

	tests := []struct {
		name     string
		source   string
		content  string
		maxChars int
		want     []piece
	}{{
		name:   "headings become sections under the first H1",
		source: "guide.md",
		content: "# Guide\n\nIntro text.\n\n## Install\n\nStep one.\nStill step one.\n\n" +
			"### Linux\n\nUse apt.\n\n## Use ##\n\nRun it.\n",
		want: []piece{
			{"Guide", "", "Intro text."},
			{"Guide", "Install", "Step one.\nStill step one."},
			{"Guide", "Install > Linux", "Use apt."},
			{"Guide", "Use", "Run it."},
		},
	}, {
		name:    "no H1: title is the file name",
		source:  "docs/notes.md",
		content: "Preamble.\n\n## Part A\n\nAlpha.\n\n#### Deep\n\nDelta.\n\n## Part B\n\nBeta.",
		want: []piece{
			{"notes", "", "Preamble."},
			{"notes", "Part A", "Alpha."},
			{"notes", "Part A > Deep", "Delta."},
			{"notes", "Part B", "Beta."},
		},
	}, {
		name:    "a second H1 starts its own path",
		source:  "a.md",
		content: "# First\n\nOne.\n\n# Second\n\nTwo.\n\n## Sub\n\nThree.",
		want: []piece{
			{"First", "", "One."},
			{"First", "Second", "Two."},
			{"First", "Second > Sub", "Three."},
		},
	}, {
		name:    "plain text without headings",
		source:  "notes/readme.txt",
		content: "Hello world.\n\n\n  Second paragraph,\n  two lines.  \n",
		want:    []piece{{"readme", "", "Hello world.\n\nSecond paragraph,\n  two lines."}},
	}, {
		name:    "empty sections are dropped",
		source:  "a.md",
		content: "# T\n\n## Empty\n\n   \n\n## Also empty\n## Full\n\ntext\n\n## Trailing\n",
		want:    []piece{{"T", "Full", "text"}},
	}, {
		name:    "hashes that are not headings",
		source:  "a.md",
		content: "# T\n\n#hashtag line\n\n```sh\n# a comment\n\necho hi\n```\n\n    # indented code\n\n####### seven",
		want: []piece{{"T", "",
			"#hashtag line\n\n```sh\n# a comment\n\necho hi\n```\n\n# indented code\n\n####### seven"}},
	}, {
		name:    "heading text may start with a hash",
		source:  "a.md",
		content: "# T\n\n## #1 priority ##\n\nShip it.",
		want:    []piece{{"T", "#1 priority", "Ship it."}},
	}, {
		name:    "windows line endings and byte order mark",
		source:  "a.md",
		content: "\ufeff# Title\r\n\r\nBody line.\r\n",
		want:    []piece{{"Title", "", "Body line."}},
	}, {
		name:     "paragraphs are packed together while they fit",
		source:   "a.txt",
		content:  para('a', 15) + "\n\n" + para('b', 15) + "\n\n" + para('c', 15) + "\n\n" + para('d', 30),
		maxChars: 40,
		want: []piece{
			{"a", "", para('a', 15) + "\n\n" + para('b', 15)},
			{"a", "", para('c', 15)},
			{"a", "", para('d', 30)},
		},
	}, {
		name:     "a long paragraph is cut between sentences",
		source:   "a.txt",
		content:  "One two three. Four five six! Seven eight nine? Ten.",
		maxChars: 30,
		want: []piece{
			{"a", "", "One two three. Four five six!"},
			{"a", "", "Seven eight nine? Ten."},
		},
	}, {
		name:     "a long sentence is cut at a space",
		source:   "a.txt",
		content:  "alpha beta gamma delta epsilon zeta eta theta",
		maxChars: 20,
		want: []piece{
			{"a", "", "alpha beta gamma"},
			{"a", "", "delta epsilon zeta"},
			{"a", "", "eta theta"},
		},
	}, {
		name:     "a long word is cut hard, on rune boundaries",
		source:   "a.txt",
		content:  strings.Repeat("é", 25),
		maxChars: 10,
		want: []piece{
			{"a", "", strings.Repeat("é", 10)},
			{"a", "", strings.Repeat("é", 10)},
			{"a", "", strings.Repeat("é", 5)},
		},
	}, {
		name:    "nothing but headings",
		source:  "a.md",
		content: "# Only\n## Headings\n",
		want:    []piece{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Split(tt.source, []byte(tt.content), tt.maxChars)
			if !slices.Equal(pieces(got), tt.want) {
				t.Errorf("Split:\n got %q\nwant %q", pieces(got), tt.want)
			}
			for _, c := range got {
				if c.Source != tt.source || c.ID != ChunkID(c.Text) {
					t.Errorf("chunk %+v: want source %q and ID %q", c, tt.source, ChunkID(c.Text))
				}
			}
		})
	}
}

// TestSplitCorpus checks properties of Split over the sample corpus at
// several sizes: limits kept, no empty chunks, no words lost or invented,
// deterministic IDs.
func TestSplitCorpus(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join(corpusDir, "*.md"))
	if err != nil || len(files) < 6 {
		t.Fatalf("sample corpus: %d files, %v", len(files), err)
	}

	for _, file := range files {
		content, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var body []string // the words outside heading lines
		for line := range strings.SplitSeq(string(content), "\n") {
			if _, _, ok := heading(line); !ok {
				body = append(body, strings.Fields(line)...)
			}
		}
		for _, maxChars := range []int{0, 60, 300} {
			chunks := Split(filepath.Base(file), content, maxChars)
			limit := maxChars
			if limit == 0 {
				limit = DefaultMaxChars
			}
			var words []string
			for _, c := range chunks {
				if strings.TrimSpace(c.Text) == "" || c.Title == "" || len(c.ID) != 32 {
					t.Errorf("%s at %d: bad chunk %+v", file, maxChars, c)
				}
				if n := utf8.RuneCountInString(c.Text); n > limit {
					t.Errorf("%s at %d: chunk of %d characters: %q", file, maxChars, n, c.Text)
				}
				words = append(words, strings.Fields(c.Text)...)
			}
			if !slices.Equal(words, body) {
				t.Errorf("%s at %d: the chunks' words differ from the document's", file, maxChars)
			}
			if again := Split(filepath.Base(file), content, maxChars); !reflect.DeepEqual(again, chunks) {
				t.Errorf("%s at %d: Split is not deterministic", file, maxChars)
			}
		}
	}
}

func TestChunkID(t *testing.T) {
	t.Parallel()
	id := ChunkID("Thirty requests per day.")
	if len(id) != 32 {
		t.Errorf("ChunkID = %q, want 32 hex digits", id)
	}
	if got := ChunkID("  Thirty requests\n per   day. "); got != id {
		t.Errorf("white space changed the ID: %s, want %s", got, id)
	}
	if got := ChunkID("Thirty requests per day!"); got == id {
		t.Error("different text, same ID")
	}
}
