package pricing

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFile writes content to a file called name in a fresh temporary
// directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// loadJSON loads a table from a JSON pricing file with the given content.
func loadJSON(t *testing.T, content string) *Table {
	t.Helper()
	table, err := Load(writeFile(t, "pricing.json", content))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return table
}

func TestLoadEmptyPathIsDefault(t *testing.T) {
	t.Parallel()
	table, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(table.Models(), ","), strings.Join(Default().Models(), ","); got != want {
		t.Errorf("Load(\"\").Models() = %s, want %s", got, want)
	}
}

func TestLoadOverlaysDefaults(t *testing.T) {
	t.Parallel()
	const jsonFile = `{"models": {
		"my-llama":    {"input": 0.10, "cached_input": 0.05, "output": 0.20},
		"gpt-4o-mini": {"input": 1, "output": 2.000000001},
		"free-local":  {"input": 0, "output": 0}
	}}`
	const yamlFile = `
# prices in USD per million tokens
models:
  my-llama:
    input: 0.10
    cached_input: 0.05   # half price
    output: 0.20
  gpt-4o-mini: {input: 1, output: 2.000000001}
  free-local:
    input: 0
    output: 0
`
	for _, tt := range []struct{ name, file, content string }{
		{"JSON", "pricing.json", jsonFile},
		{"JSON, no extension", "pricing", jsonFile},
		{"YAML", "pricing.yaml", yamlFile},
		{"YML", "pricing.YML", yamlFile},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			table, err := Load(writeFile(t, tt.file, tt.content))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			prices := []struct {
				model string
				want  Price
			}{
				{"my-llama", Price{Input: 100_000_000, CachedInput: 50_000_000, Output: 200_000_000}},
				// An override replaces the whole entry; cached_input defaults
				// to input, not to the old cached price.
				{"gpt-4o-mini", Price{Input: 1_000_000_000, CachedInput: 1_000_000_000, Output: 2_000_000_001}},
				{"gpt-4o-mini-2024-07-18", Price{Input: 1_000_000_000, CachedInput: 1_000_000_000, Output: 2_000_000_001}},
				{"free-local", Price{}},
				// Defaults not in the file are kept.
				{"gpt-4o", Price{Input: 2_500_000_000, CachedInput: 1_250_000_000, Output: 10_000_000_000}},
			}
			for _, p := range prices {
				got, err := table.Price(p.model)
				if err != nil {
					t.Errorf("Price(%q): %v", p.model, err)
					continue
				}
				if got != p.want {
					t.Errorf("Price(%q) = %+v, want %+v", p.model, got, p.want)
				}
			}
			// 1000 uncached + 1000 cached prompt tokens and 1000 completion
			// tokens of my-llama: 100 + 50 + 200 nanos per token.
			if got, err := table.Cost("my-llama", 2_000, 1_000, 1_000); err != nil || got != 350_000 {
				t.Errorf("Cost(my-llama) = %d, %v; want 350000", got, err)
			}
			if got, want := len(table.Models()), len(Default().Models())+2; got != want {
				t.Errorf("len(Models()) = %d, want %d", got, want)
			}
		})
	}
}

func TestLoadDoesNotChangeDefault(t *testing.T) {
	t.Parallel()
	loadJSON(t, `{"models": {"gpt-4o": {"input": 99, "output": 99}}}`)
	p, err := Default().Price("gpt-4o")
	if err != nil {
		t.Fatal(err)
	}
	if p.Input != 2_500_000_000 {
		t.Errorf("Default() gpt-4o input = %d after Load, want 2500000000", p.Input)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		file    string
		content string
		want    []string // substrings the error must contain, besides the path
	}{
		{"bad JSON", "p.json", `{"models": {`, []string{"decoding JSON"}},
		{"not JSON at all", "p.json", `models: {}`, []string{"decoding JSON at byte 1", "invalid character"}},
		{"top level is an array", "p.json", `[1, 2]`, []string{"decoding JSON"}},
		{"trailing data", "p.json", `{"models": {"m": {"input": 1, "output": 1}}} {}`, []string{"after the top-level object"}},
		{"empty file", "p.json", ``, []string{"decoding JSON"}},
		{"no models", "p.json", `{"models": {}}`, []string{"no models"}},
		{"misspelt top-level key", "p.json", `{"model": {"m": {"input": 1, "output": 1}}}`, []string{`unknown field "model"`}},
		{"misspelt field", "p.json", `{"models": {"m": {"input": 1, "cache_input": 1, "output": 1}}}`, []string{`unknown field "cache_input"`}},
		{"negative input", "p.json", `{"models": {"m": {"input": -0.10, "output": 1}}}`, []string{`model "m"`, "input price -0.10", "negative"}},
		{"negative cached", "p.json", `{"models": {"m": {"input": 1, "cached_input": -1, "output": 1}}}`, []string{`model "m"`, "cached_input price -1", "negative"}},
		{"negative output", "p.json", `{"models": {"m": {"input": 1, "output": -2}}}`, []string{`model "m"`, "output price -2", "negative"}},
		{"price as string", "p.json", `{"models": {"m": {"input": "0.10", "output": 1}}}`, []string{`model "m"`, "input price", "not a string"}},
		{"price as object", "p.json", `{"models": {"m": {"input": {}, "output": 1}}}`, []string{`model "m"`, "input price", "not a decimal"}},
		{"exponent", "p.json", `{"models": {"m": {"input": 1e-7, "output": 1}}}`, []string{`model "m"`, "input price 1e-7", "not a decimal"}},
		{"finer than a nano", "p.json", `{"models": {"m": {"input": 0.0000000001, "output": 1}}}`, []string{`model "m"`, "nano-dollar"}},
		{"missing output", "p.json", `{"models": {"m": {"input": 1}}}`, []string{`model "m"`, "missing output price"}},
		{"null input", "p.json", `{"models": {"m": {"input": null, "output": 1}}}`, []string{`model "m"`, "missing input price"}},
		{"empty model name", "p.json", `{"models": {"": {"input": 1, "output": 1}}}`, []string{"empty model name"}},
		{"bad YAML", "p.yaml", "models:\n  m: [unclosed\n", []string{"decoding YAML", "[2:6]"}},
		{"duplicate YAML key", "p.yaml", "models:\n  m:\n    input: 1\n    input: 2\n    output: 1\n", []string{`"input" already defined`}},
		{"YAML tagged price", "p.yaml", "models:\n  m:\n    input: !!str 1\n    output: 1\n", []string{`model "m"`, "not a decimal"}},
		{"negative YAML price", "p.yaml", "models:\n  m:\n    input: -1\n    output: 1\n", []string{`model "m"`, "input price -1", "negative"}},
		{"YAML price as string", "p.yaml", "models:\n  m:\n    input: '0.10'\n    output: 1\n", []string{`model "m"`, "not a string"}},
		{"YAML missing input", "p.yaml", "models:\n  m:\n    output: 1\n", []string{`model "m"`, "missing input price"}},
		{"YAML misspelt field", "p.yml", "models:\n  m:\n    input: 1\n    ouput: 1\n", []string{"ouput"}},
		{"YAML no models", "p.yaml", "{}\n", []string{"no models"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, tt.file, tt.content)
			table, err := Load(path)
			if err == nil {
				t.Fatalf("Load succeeded with models %v, want error", table.Models())
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error %q spans several lines, want one", msg)
			}
			for _, want := range append(tt.want, path) {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "nope.json")
	_, err := Load(path)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("Load(missing) error = %v, want fs.ErrNotExist naming %s", err, path)
	}
}
