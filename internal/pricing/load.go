package pricing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/goccy/go-yaml"
)

// Load returns the default table overlaid with the prices in the file at
// path; an empty path returns [Default]. Models in the file are added, or
// replace a default of the same name entirely.
//
// Files ending in .yaml or .yml are read as YAML, anything else as JSON:
//
//	{"models": {"my-llama": {"input": 0.10, "cached_input": 0.05, "output": 0.20}}}
//
// Prices are plain decimal numbers of dollars per million tokens, parsed
// exactly (no floats), with at most 9 decimal places. input and output are
// required; cached_input defaults to input. Unknown fields, negative or
// malformed prices and a file with no models are errors that name the file,
// the model and the field.
func Load(path string) (*Table, error) {
	t := Default()
	if path == "" {
		return t, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading pricing file: %w", err)
	}
	overrides, err := parseFile(path, data)
	if err != nil {
		return nil, fmt.Errorf("pricing file %s: %w", path, err)
	}
	maps.Copy(t.prices, overrides)
	return t, nil
}

// pricingFile is the layout of a pricing file.
type pricingFile struct {
	Models map[string]filePrice `json:"models" yaml:"models"`
}

// filePrice is one model's entry, in dollars per million tokens. A nil field
// was absent (or null) in the file.
type filePrice struct {
	Input       *number `json:"input" yaml:"input"`
	CachedInput *number `json:"cached_input" yaml:"cached_input"`
	Output      *number `json:"output" yaml:"output"`
}

// number keeps the source text of a value so it can be parsed as an exact
// decimal later, where the error can name the model and field.
type number string

// UnmarshalJSON implements json.Unmarshaler.
func (n *number) UnmarshalJSON(b []byte) error {
	*n = number(b)
	return nil
}

// UnmarshalYAML implements yaml.BytesUnmarshaler.
func (n *number) UnmarshalYAML(b []byte) error {
	*n = number(strings.TrimSpace(string(b)))
	return nil
}

// parseFile decodes and validates a pricing file, choosing the format by the
// extension of path.
func parseFile(path string, data []byte) (map[string]Price, error) {
	var f pricingFile
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		if err := yaml.UnmarshalWithOptions(data, &f, yaml.DisallowUnknownField()); err != nil {
			// One line with the position, without the library's source excerpt.
			return nil, fmt.Errorf("decoding YAML: %s", yaml.FormatError(err, false, false))
		}
	default:
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			if syntaxErr, ok := errors.AsType[*json.SyntaxError](err); ok {
				return nil, fmt.Errorf("decoding JSON at byte %d: %w", syntaxErr.Offset, err)
			}
			return nil, fmt.Errorf("decoding JSON: %w", err)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, errors.New("decoding JSON: unexpected data after the top-level object")
		}
	}
	if len(f.Models) == 0 {
		return nil, errors.New(`no models defined (want {"models": {"name": {"input": ..., "output": ...}}})`)
	}

	prices := make(map[string]Price, len(f.Models))
	for _, name := range slices.Sorted(maps.Keys(f.Models)) { // sorted: stable errors
		if strings.TrimSpace(name) == "" {
			return nil, errors.New("empty model name")
		}
		p, err := f.Models[name].price()
		if err != nil {
			return nil, fmt.Errorf("model %q: %w", name, err)
		}
		prices[name] = p
	}
	return prices, nil
}

// price validates the entry and converts it to nano-dollars.
func (fp filePrice) price() (Price, error) {
	var p Price
	var err error
	if p.Input, err = fp.Input.usd("input"); err != nil {
		return Price{}, err
	}
	if p.Output, err = fp.Output.usd("output"); err != nil {
		return Price{}, err
	}
	p.CachedInput = p.Input
	if fp.CachedInput != nil {
		if p.CachedInput, err = fp.CachedInput.usd("cached_input"); err != nil {
			return Price{}, err
		}
	}
	return p, nil
}

// usd parses the value of the named field as an exact, non-negative dollar
// amount.
func (n *number) usd(field string) (Nanos, error) {
	if n == nil {
		return 0, fmt.Errorf("missing %s price", field)
	}
	s := string(*n)
	if s == "null" || s == "~" || s == "" {
		return 0, fmt.Errorf("missing %s price", field)
	}
	if strings.HasPrefix(s, `"`) || strings.HasPrefix(s, `'`) {
		return 0, fmt.Errorf("%s price %s: must be a number, not a string", field, s)
	}
	v, err := parseDecimal(s)
	if err != nil {
		return 0, fmt.Errorf("%s price %s: %w", field, s, err)
	}
	return v, nil
}
