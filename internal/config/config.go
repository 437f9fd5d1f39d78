// Package config reads typed settings from environment variables, with
// defaults and an optional .env file.
//
// A Reader collects the first invalid value instead of failing on each call,
// so a binary reads all of its settings top to bottom and checks Err once:
//
//	env := config.New(getenv)
//	addr := env.String("HTTP_ADDR", "127.0.0.1:8080")
//	ttl := env.Duration("QUERY_TTL", 24*time.Hour)
//	if err := env.Err(); err != nil {
//		return err // config: QUERY_TTL="soon": not a duration
//	}
package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/joho/godotenv"
)

// Reader reads settings through a getenv function. It is not safe for
// concurrent use; read settings once at start-up.
type Reader struct {
	getenv func(string) string
	err    error
}

// New returns a Reader over getenv (os.Getenv in production, a map in tests).
func New(getenv func(string) string) *Reader {
	return &Reader{getenv: getenv}
}

// WithDotEnv returns a getenv that falls back to the variables in the .env
// file at path when getenv has no value for a name. A missing file is not
// an error; a malformed one is.
func WithDotEnv(path string, getenv func(string) string) (func(string) string, error) {
	vars, err := godotenv.Read(path)
	if errors.Is(err, os.ErrNotExist) {
		return getenv, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config: reading %s: %w", path, err)
	}
	return func(name string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return vars[name]
	}, nil
}

// Err returns the first invalid setting met so far, as one line naming the
// variable and its value.
func (r *Reader) Err() error { return r.err }

// Fail records an invalid setting found by the caller's own checks, such as
// a range. Only the first failure is kept.
func (r *Reader) Fail(name, value, reason string) {
	if r.err == nil {
		r.err = fmt.Errorf("config: %s=%q: %s", name, value, reason)
	}
}

func (r *Reader) lookup(name string) (string, bool) {
	v := strings.TrimSpace(r.getenv(name))
	return v, v != ""
}

// String returns the variable's value, or def when it is unset or empty.
func (r *Reader) String(name, def string) string {
	if v, ok := r.lookup(name); ok {
		return v
	}
	return def
}

// Int returns the variable as an integer, or def when it is unset.
func (r *Reader) Int(name string, def int) int {
	v, ok := r.lookup(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.Fail(name, v, "not an integer")
		return def
	}
	return n
}

// Float returns the variable as a finite float, or def when it is unset.
func (r *Reader) Float(name string, def float64) float64 {
	v, ok := r.lookup(name)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		r.Fail(name, v, "not a number")
		return def
	}
	return f
}

// Bool returns the variable as a boolean (1/0, true/false, yes/no, on/off),
// or def when it is unset.
func (r *Reader) Bool(name string, def bool) bool {
	v, ok := r.lookup(name)
	if !ok {
		return def
	}
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		return true
	case "0", "false", "no", "off":
		return false
	}
	r.Fail(name, v, "not a boolean (true/false)")
	return def
}

// Duration returns the variable as a duration, or def when it is unset.
// A Go duration ("90s", "24h") or a whole number of seconds ("300") is
// accepted; negative durations are not.
func (r *Reader) Duration(name string, def time.Duration) time.Duration {
	v, ok := r.lookup(name)
	if !ok {
		return def
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 || n > int64(1<<63-1)/int64(time.Second) {
			r.Fail(name, v, "out of range")
			return def
		}
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.Fail(name, v, `not a duration (like "300", "90s" or "24h")`)
		return def
	}
	if d < 0 {
		r.Fail(name, v, "must not be negative")
		return def
	}
	return d
}

// List returns the variable split on commas with blanks trimmed and empty
// items dropped, or def when it is unset.
func (r *Reader) List(name string, def []string) []string {
	v, ok := r.lookup(name)
	if !ok {
		return def
	}
	var out []string
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	if len(out) == 0 {
		r.Fail(name, v, "empty list")
		return def
	}
	return out
}

// OneOf returns the variable's value if it is one of allowed, or def when
// it is unset.
func (r *Reader) OneOf(name, def string, allowed ...string) string {
	v, ok := r.lookup(name)
	if !ok {
		return def
	}
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	r.Fail(name, v, "must be one of "+strings.Join(allowed, ", "))
	return def
}

// IntRange is Int with bounds: a value outside [lo, hi] is invalid.
func (r *Reader) IntRange(name string, def, lo, hi int) int {
	n := r.Int(name, def)
	if n < lo || n > hi {
		r.Fail(name, strconv.Itoa(n), fmt.Sprintf("must be between %d and %d", lo, hi))
		return def
	}
	return n
}

// Positive is Float with a lower bound: zero or less is invalid.
func (r *Reader) Positive(name string, def float64) float64 {
	f := r.Float(name, def)
	if f <= 0 {
		r.Fail(name, strconv.FormatFloat(f, 'g', -1, 64), "must be greater than 0")
		return def
	}
	return f
}

// Common holds the settings every binary reads.
type Common struct {
	NATSURL    string // empty = embedded server
	NATSCreds  string
	NATSListen string // where an embedded server listens for other processes
	Replicas   int    // stream and bucket replicas: 1 in dev, 3 in production
	DataDir    string
	LogLevel   string
	LogFormat  string
}

// Common reads the settings shared by every binary.
func (r *Reader) Common() Common {
	return Common{
		NATSURL:    r.String("NATS_URL", ""),
		NATSCreds:  r.String("NATS_CREDS", ""),
		NATSListen: r.String("NATS_LISTEN", "127.0.0.1:4222"),
		Replicas:   r.IntRange("NATS_REPLICAS", 1, 1, 5),
		DataDir:    r.String("DATA_DIR", "./data"),
		LogLevel:   r.String("LOG_LEVEL", "info"),
		LogFormat:  r.OneOf("LOG_FORMAT", "json", "json", "text"),
	}
}
