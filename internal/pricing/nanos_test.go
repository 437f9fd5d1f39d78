package pricing

import (
	"math"
	"strings"
	"testing"
)

func TestParseUSD(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Nanos
	}{
		{"0", 0},
		{"1", 1_000_000_000},
		{"1.00", 1_000_000_000},
		{"1.5", 1_500_000_000},
		{"0.15", 150_000_000},
		{"0.000000001", 1},
		{"0.123456789", 123_456_789},
		{"1.0000000000", 1_000_000_000}, // extra zeros are still exact
		{"$2.50", 2_500_000_000},
		{"007", 7_000_000_000},
		{"9223372036.854775807", math.MaxInt64},
	}
	for _, tt := range tests {
		got, err := ParseUSD(tt.in)
		if err != nil {
			t.Errorf("ParseUSD(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseUSD(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestParseUSDRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		wantErr string
	}{
		{"", "empty"},
		{"$", "empty"},
		{"-1", "negative"},
		{"-0.5", "negative"},
		{"+1", "not a decimal"},
		{"abc", "not a decimal"},
		{"1.", "not a decimal"},
		{".5", "not a decimal"},
		{"1.2.3", "not a decimal"},
		{"1e3", "not a decimal"},
		{" 1", "not a decimal"},
		{"1,000", "not a decimal"},
		{"NaN", "not a decimal"},
		{"1.0000000001", "nano-dollar"},
		{"0.0000000005", "nano-dollar"},
		{"9223372036.854775808", "too large"},
		{"99999999999999999999", "too large"},
	}
	for _, tt := range tests {
		got, err := ParseUSD(tt.in)
		if err == nil {
			t.Errorf("ParseUSD(%q) = %d, want error", tt.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), `"`+tt.in+`"`) {
			t.Errorf("ParseUSD(%q) error = %q, want it to quote the input and mention %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestNanosString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   Nanos
		want string
	}{
		{0, "$0.00"},
		{1, "$0.000000001"},
		{12_345_000, "$0.012345"},
		{10_000_000, "$0.01"},
		{150_000_000, "$0.15"},
		{1_000_000_000, "$1.00"},
		{1_500_000_000, "$1.50"},
		{123_456_789_012, "$123.456789012"},
		{-500_000_000, "-$0.50"},
		{-1, "-$0.000000001"},
		{math.MaxInt64, "$9223372036.854775807"},
		{math.MinInt64, "-$9223372036.854775808"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("Nanos(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
		}
	}
}

func TestStringParseRoundTrip(t *testing.T) {
	t.Parallel()
	for _, n := range []Nanos{0, 1, 9, 10, 999_999_999, 1_000_000_000, 1_000_000_001, 12_345_000, 4_200_000_000_000, math.MaxInt64} {
		s := n.String()
		got, err := ParseUSD(s)
		if err != nil {
			t.Errorf("ParseUSD(%q) (from Nanos %d): %v", s, int64(n), err)
			continue
		}
		if got != n {
			t.Errorf("ParseUSD(Nanos(%d).String() = %q) = %d", int64(n), s, int64(got))
		}
	}
}

func TestFromUSD(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   float64
		want Nanos
	}{
		{0, 0},
		{1, 1_000_000_000},
		{0.15, 150_000_000}, // 0.15 is 0.1499999999999999944... as a float
		{1.00, 1_000_000_000},
		{0.000000001, 1},
		{0.0000000004, 0}, // rounds down
		{0.0000000006, 1}, // rounds up
		{-0.25, -250_000_000},
		{math.NaN(), 0},
		{math.Inf(1), math.MaxInt64},
		{1e30, math.MaxInt64},
		{math.Inf(-1), math.MinInt64},
	}
	for _, tt := range tests {
		if got := FromUSD(tt.in); got != tt.want {
			t.Errorf("FromUSD(%v) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestNanosUSD(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   Nanos
		want float64
	}{
		{0, 0},
		{1_500_000_000, 1.5},
		{150_000_000, 0.15},
		{-250_000_000, -0.25},
	}
	for _, tt := range tests {
		if got := tt.in.USD(); got != tt.want {
			t.Errorf("Nanos(%d).USD() = %v, want %v", int64(tt.in), got, tt.want)
		}
	}
}
