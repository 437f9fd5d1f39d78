package config_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gravitycar/tollgate/internal/config"
)

func env(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

func TestTypedGetters(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		value   string // "" = unset
		read    func(r *config.Reader) any
		want    any
		wantErr string // substring of Err(); "" = no error
	}{
		{"string value", "x:1", func(r *config.Reader) any { return r.String("V", "def") }, "x:1", ""},
		{"string default", "", func(r *config.Reader) any { return r.String("V", "def") }, "def", ""},
		{"string trimmed", "  a  ", func(r *config.Reader) any { return r.String("V", "def") }, "a", ""},

		{"int value", "42", func(r *config.Reader) any { return r.Int("V", 7) }, 42, ""},
		{"int default", "", func(r *config.Reader) any { return r.Int("V", 7) }, 7, ""},
		{"int invalid", "4x", func(r *config.Reader) any { return r.Int("V", 7) }, 7, `config: V="4x": not an integer`},

		{"float value", "0.016667", func(r *config.Reader) any { return r.Float("V", 1) }, 0.016667, ""},
		{"float default", "", func(r *config.Reader) any { return r.Float("V", 1.5) }, 1.5, ""},
		{"float invalid", "one", func(r *config.Reader) any { return r.Float("V", 1) }, 1.0, `config: V="one": not a number`},
		{"float NaN", "NaN", func(r *config.Reader) any { return r.Float("V", 1) }, 1.0, "not a number"},
		{"float Inf", "+Inf", func(r *config.Reader) any { return r.Float("V", 1) }, 1.0, "not a number"},

		{"bool true", "yes", func(r *config.Reader) any { return r.Bool("V", false) }, true, ""},
		{"bool false", "0", func(r *config.Reader) any { return r.Bool("V", true) }, false, ""},
		{"bool default", "", func(r *config.Reader) any { return r.Bool("V", true) }, true, ""},
		{"bool invalid", "maybe", func(r *config.Reader) any { return r.Bool("V", true) }, true, `config: V="maybe": not a boolean`},

		{"duration go", "90s", func(r *config.Reader) any { return r.Duration("V", time.Hour) }, 90 * time.Second, ""},
		{"duration seconds", "300", func(r *config.Reader) any { return r.Duration("V", time.Hour) }, 300 * time.Second, ""},
		{"duration default", "", func(r *config.Reader) any { return r.Duration("V", time.Hour) }, time.Hour, ""},
		{"duration invalid", "soon", func(r *config.Reader) any { return r.Duration("V", time.Hour) }, time.Hour, `config: V="soon": not a duration`},
		{"duration negative", "-5s", func(r *config.Reader) any { return r.Duration("V", time.Hour) }, time.Hour, "must not be negative"},
		{"duration negative seconds", "-5", func(r *config.Reader) any { return r.Duration("V", time.Hour) }, time.Hour, "out of range"},

		{"list value", "a, b,,c ", func(r *config.Reader) any { return r.List("V", nil) }, []string{"a", "b", "c"}, ""},
		{"list default", "", func(r *config.Reader) any { return r.List("V", []string{"d"}) }, []string{"d"}, ""},
		{"list invalid", " , ,", func(r *config.Reader) any { return r.List("V", []string{"d"}) }, []string{"d"}, `config: V=", ,": empty list`},

		{"one of value", "DEV", func(r *config.Reader) any { return r.OneOf("V", "jwks", "jwks", "dev") }, "dev", ""},
		{"one of default", "", func(r *config.Reader) any { return r.OneOf("V", "jwks", "jwks", "dev") }, "jwks", ""},
		{"one of invalid", "basic", func(r *config.Reader) any { return r.OneOf("V", "jwks", "jwks", "dev") }, "jwks", "must be one of jwks, dev"},

		{"int range value", "20", func(r *config.Reader) any { return r.IntRange("V", 5, 1, 20) }, 20, ""},
		{"int range default", "", func(r *config.Reader) any { return r.IntRange("V", 5, 1, 20) }, 5, ""},
		{"int range invalid", "21", func(r *config.Reader) any { return r.IntRange("V", 5, 1, 20) }, 5, `config: V="21": must be between 1 and 20`},

		{"positive value", "2.5", func(r *config.Reader) any { return r.Positive("V", 1) }, 2.5, ""},
		{"positive default", "", func(r *config.Reader) any { return r.Positive("V", 1) }, 1.0, ""},
		{"positive invalid", "0", func(r *config.Reader) any { return r.Positive("V", 1) }, 1.0, "must be greater than 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			vars := map[string]string{}
			if tt.value != "" {
				vars["V"] = tt.value
			}
			r := config.New(env(vars))
			got := tt.read(r)
			if gs, ok := got.([]string); ok {
				if !slices.Equal(gs, tt.want.([]string)) {
					t.Errorf("got %q, want %q", gs, tt.want)
				}
			} else if got != tt.want {
				t.Errorf("got %v (%T), want %v (%T)", got, got, tt.want, tt.want)
			}
			err := r.Err()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestFirstErrorWinsAndIsOneLine(t *testing.T) {
	t.Parallel()
	r := config.New(env(map[string]string{"A": "x", "B": "y"}))
	r.Int("A", 0)
	r.Bool("B", false)
	err := r.Err()
	if err == nil || !strings.Contains(err.Error(), "A=") || strings.Contains(err.Error(), "B=") {
		t.Fatalf("Err() = %v, want the first failure only (A)", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("Err() spans lines: %q", err)
	}
}

func TestWithDotEnv(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, ".env")
	if err := os.WriteFile(path, []byte("# comment\nHTTP_ADDR=127.0.0.1:9999\nLOG_LEVEL=debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	getenv, err := config.WithDotEnv(path, env(map[string]string{"LOG_LEVEL": "warn"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := getenv("HTTP_ADDR"); got != "127.0.0.1:9999" {
		t.Errorf("HTTP_ADDR from .env = %q", got)
	}
	if got := getenv("LOG_LEVEL"); got != "warn" {
		t.Errorf("LOG_LEVEL = %q, want the real environment to win over .env", got)
	}

	missing, err := config.WithDotEnv(filepath.Join(dir, "nope.env"), env(map[string]string{"X": "1"}))
	if err != nil || missing("X") != "1" {
		t.Fatalf("missing .env: err=%v X=%q", err, missing("X"))
	}

	bad := filepath.Join(dir, "bad.env")
	if err := os.WriteFile(bad, []byte("A='unterminated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.WithDotEnv(bad, env(nil)); err == nil {
		t.Error("malformed .env accepted")
	}
}
