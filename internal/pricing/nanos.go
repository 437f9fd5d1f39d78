package pricing

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// NanosPerUSD is the number of nano-dollars in one US dollar. It is an
// untyped constant so that decimal literals such as 0.15*NanosPerUSD are
// converted exactly, and checked, at compile time.
const NanosPerUSD = 1_000_000_000

// fracDigits is the number of decimal places a Nanos value holds.
const fracDigits = 9

// Nanos is an amount of money in nano-dollars (1 USD = 1e9 Nanos).
//
// All arithmetic on money is done on Nanos, which are integers; conversions to
// and from float64 happen only at the edges (JSON output, configuration).
// An int64 of nano-dollars holds amounts up to about 9.2 billion USD.
type Nanos int64

// USD returns n in dollars as a float64, for JSON output and metrics.
// Never sum the results; sum Nanos and convert once.
func (n Nanos) USD() float64 {
	return float64(n) / NanosPerUSD
}

// String formats n exactly as dollars, with at least two decimal places and
// no trailing zeros beyond them: "$1.00", "$0.012345", "$0.000000001",
// "-$0.50".
func (n Nanos) String() string {
	u := uint64(n)
	sign := ""
	if n < 0 {
		sign = "-"
		u = -u // two's complement negation; correct for math.MinInt64 too
	}
	frac := fmt.Sprintf("%09d", u%NanosPerUSD)
	frac = strings.TrimRight(frac, "0")
	for len(frac) < 2 {
		frac += "0"
	}
	return sign + "$" + strconv.FormatUint(u/NanosPerUSD, 10) + "." + frac
}

// ParseUSD parses a non-negative decimal dollar amount, such as the value of
// DAILY_BUDGET_USD, exactly: "1.00" is 1e9 Nanos and "0.000000001" is 1 Nano.
// An optional leading "$" is accepted, so ParseUSD(n.String()) == n for any
// n >= 0.
//
// Signs, exponents, spaces and anything finer than a nano-dollar are rejected:
// "1.0000000001" is an error, while "1.0000000000" (extra zeros only) is
// accepted because it is still exact.
func ParseUSD(s string) (Nanos, error) {
	n, err := parseDecimal(strings.TrimPrefix(s, "$"))
	if err != nil {
		return 0, fmt.Errorf("parsing USD amount %q: %w", s, err)
	}
	return n, nil
}

// FromUSD converts a float64 dollar amount to Nanos, rounding to the nearest
// nano-dollar (halves away from zero). It is meant for configuration values
// that arrive as floats; prefer ParseUSD when the decimal text is available.
// NaN converts to 0, and values beyond the range of Nanos saturate at
// math.MaxInt64 or math.MinInt64.
func FromUSD(f float64) Nanos {
	v := math.Round(f * NanosPerUSD)
	switch {
	case math.IsNaN(v):
		return 0
	case v >= math.MaxInt64: // float64(MaxInt64) rounds up to 2^63
		return math.MaxInt64
	case v <= math.MinInt64:
		return math.MinInt64
	}
	return Nanos(v)
}

// parseDecimal parses an unsigned decimal number of dollars ("12", "0.5",
// "1.250") into Nanos, exactly.
func parseDecimal(s string) (Nanos, error) {
	if s == "" {
		return 0, errors.New("empty amount")
	}
	if s[0] == '-' {
		return 0, errors.New("negative amount")
	}
	whole, frac, hasPoint := strings.Cut(s, ".")
	if whole == "" || (hasPoint && frac == "") {
		return 0, errors.New("not a decimal number (want digits with an optional fraction, like 1.25)")
	}
	if !allDigits(whole) || !allDigits(frac) {
		return 0, errors.New("not a decimal number (want digits with an optional fraction, like 1.25)")
	}
	if len(frac) > fracDigits {
		if strings.Trim(frac[fracDigits:], "0") != "" {
			return 0, errors.New("more precise than a nano-dollar (at most 9 decimal places)")
		}
		frac = frac[:fracDigits]
	}
	dollars, err := strconv.ParseUint(whole, 10, 64)
	if err != nil || dollars > math.MaxInt64/NanosPerUSD {
		return 0, errors.New("amount too large")
	}
	var nanos uint64
	if frac != "" {
		// frac has 1 to 9 digits; pad to 9 so "5" means 500000000.
		nanos, _ = strconv.ParseUint(frac+strings.Repeat("0", fracDigits-len(frac)), 10, 64)
	}
	total := dollars*NanosPerUSD + nanos
	if total > math.MaxInt64 {
		return 0, errors.New("amount too large")
	}
	return Nanos(total), nil
}

// allDigits reports whether s consists only of ASCII digits (true for "").
func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
