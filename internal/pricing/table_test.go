package pricing

import (
	"errors"
	"math"
	"math/big"
	"slices"
	"strings"
	"testing"
)

// TestDefaultCosts prices 10,000 prompt tokens (4,000 of them cached) and
// 2,000 completion tokens on every default model. The expected totals are
// written as tokens times nano-dollars per token, worked out by hand from the
// list price: $0.15 per million tokens is 150 nano-dollars per token.
func TestDefaultCosts(t *testing.T) {
	t.Parallel()
	const prompt, cached, completion = 10_000, 4_000, 2_000
	const uncached = prompt - cached
	tests := []struct {
		model string
		want  Nanos
	}{
		{"gpt-4o-mini", uncached*150 + cached*75 + completion*600},    // $0.0024
		{"gpt-4o", uncached*2_500 + cached*1_250 + completion*10_000}, // $0.04
		{"gpt-4o-2024-05-13", uncached*5_000 + cached*5_000 + completion*15_000},
		{"gpt-4-turbo", uncached*10_000 + cached*10_000 + completion*30_000}, // no cache discount
		{"gpt-4", uncached*30_000 + cached*30_000 + completion*60_000},
		{"gpt-3.5-turbo", uncached*500 + cached*500 + completion*1_500},
		{"gpt-4.1", uncached*2_000 + cached*500 + completion*8_000},
		{"gpt-4.1-mini", uncached*400 + cached*100 + completion*1_600},
		{"gpt-4.1-nano", uncached*100 + cached*25 + completion*400},
		{"o3", uncached*2_000 + cached*500 + completion*8_000},
		{"o3-mini", uncached*1_100 + cached*550 + completion*4_400},
		{"o4-mini", uncached*1_100 + cached*275 + completion*4_400},
		{"gpt-5", uncached*1_250 + cached*125 + completion*10_000},
		{"gpt-5-mini", uncached*250 + cached*25 + completion*2_000},
		{"gpt-5-nano", uncached*50 + cached*5 + completion*400},
	}

	table := Default()
	var tested []string
	for _, tt := range tests {
		tested = append(tested, tt.model)
		got, err := table.Cost(tt.model, prompt, cached, completion)
		if err != nil {
			t.Errorf("Cost(%q): %v", tt.model, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Cost(%q) = %d (%s), want %d (%s)", tt.model, got, got, tt.want, tt.want)
		}
	}
	slices.Sort(tested)
	if models := table.Models(); !slices.Equal(models, tested) {
		t.Errorf("Default().Models() = %v, want exactly the tested models %v", models, tested)
	}
}

func TestCostSpotChecks(t *testing.T) {
	t.Parallel()
	table := Default()
	tests := []struct {
		name                       string
		model                      string
		prompt, cached, completion int
		want                       Nanos
	}{
		{"1000 prompt tokens on gpt-4o-mini", "gpt-4o-mini", 1_000, 0, 0, 150_000},
		{"1000 completion tokens on gpt-4o-mini", "gpt-4o-mini", 0, 0, 1_000, 600_000},
		{"all prompt tokens cached", "gpt-4o-mini", 1_000, 1_000, 0, 75_000},
		{"cached priced separately from uncached", "gpt-4o", 1_000, 400, 0, 600*2_500 + 400*1_250},
		{"no cache discount: cached costs input", "gpt-4", 1_000, 1_000, 0, 1_000 * 30_000},
		{"a million of each on gpt-4o", "gpt-4o", 1_000_000, 0, 1_000_000, 12_500_000_000}, // $2.50 + $10
		{"zero tokens", "gpt-4o", 0, 0, 0, 0},
	}
	for _, tt := range tests {
		got, err := table.Cost(tt.model, tt.prompt, tt.cached, tt.completion)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got != tt.want {
			t.Errorf("%s: Cost = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestCostRoundsUpOnce(t *testing.T) {
	t.Parallel()
	// $0.0000015 per million tokens is 0.0015 nano-dollars per token, and
	// $0.0000005 per million is 0.0005.
	table := loadJSON(t, `{"models": {
		"tiny": {"input": 0.0000015, "output": 0.0000015},
		"half": {"input": 0.0000005, "output": 0.0000005}
	}}`)
	tests := []struct {
		name                       string
		model                      string
		prompt, cached, completion int
		want                       Nanos
	}{
		{"one token rounds up to a nano", "tiny", 1, 0, 0, 1},
		{"exact millions do not round", "tiny", 1_000_000, 0, 0, 1_500},
		{"one token over rounds up", "tiny", 1_000_001, 0, 0, 1_501},
		// Each term is 0.0015 or 0.003 nanos; rounding every term up would
		// give 3.
		{"rounded once, not per term", "tiny", 2, 1, 1, 1},
		// 0.5 + 0.5 = 1 exactly; rounding per term would give 2.
		{"halves add up before rounding", "half", 1_000, 0, 1_000, 1},
		// 0.5 + 0.5 + 0.5 = 1.5, rounded up once to 2 (per term: 3).
		{"three halves round up to 2", "half", 2_000, 1_000, 1_000, 2},
	}
	for _, tt := range tests {
		got, err := table.Cost(tt.model, tt.prompt, tt.cached, tt.completion)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got != tt.want {
			t.Errorf("%s: Cost = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestCostLargeCountsDoNotOverflow(t *testing.T) {
	t.Parallel()
	table := loadJSON(t, `{"models": {
		"pricey": {"input": 1000, "cached_input": 500, "output": 1000},
		"cheap":  {"input": 0.000001, "output": 0.000001}
	}}`)
	tests := []struct {
		name                       string
		model                      string
		prompt, cached, completion int
		want                       Nanos
	}{
		// 1e9 tokens at $1000/M is $1,000,000; the intermediate 1e9 * 1e12
		// nano-dollars-per-million overflows int64 by a factor of 100.
		{"a billion of each at $1000/M", "pricey", 1_000_000_000, 0, 1_000_000_000, 2_000_000 * NanosPerUSD},
		{"a billion cached at $500/M", "pricey", 1_000_000_000, 1_000_000_000, 0, 500_000 * NanosPerUSD},
		// MaxInt64 tokens at 1,000 nanos per million: the product needs 74
		// bits, the result fits.
		{"max int tokens, cheap model", "cheap", math.MaxInt64, 0, 0, bigCost(math.MaxInt64, 1_000)},
		{"max int of each, cheap model", "cheap", math.MaxInt64, math.MaxInt64 / 2, math.MaxInt64, bigCost(math.MaxInt64-math.MaxInt64/2, 1_000, math.MaxInt64/2, 1_000, math.MaxInt64, 1_000)},
	}
	for _, tt := range tests {
		got, err := table.Cost(tt.model, tt.prompt, tt.cached, tt.completion)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got != tt.want {
			t.Errorf("%s: Cost = %d, want %d", tt.name, got, tt.want)
		}
	}

	// A total beyond ~$9.2 billion does not fit in Nanos: an error, not a
	// wrapped-around number.
	if got, err := table.Cost("pricey", math.MaxInt64, 0, 0); err == nil || !strings.Contains(err.Error(), "overflows") {
		t.Errorf("Cost(pricey, MaxInt64 tokens) = %d, %v; want an overflow error", got, err)
	}
}

// bigCost computes ceil(sum(tokens*price) / 1e6) with math/big, as an
// independent check of the 128-bit arithmetic. Arguments are pairs of token
// count and nano-dollars per million tokens.
func bigCost(pairs ...int64) Nanos {
	sum := new(big.Int)
	for i := 0; i < len(pairs); i += 2 {
		sum.Add(sum, new(big.Int).Mul(big.NewInt(pairs[i]), big.NewInt(pairs[i+1])))
	}
	q, r := new(big.Int).QuoRem(sum, big.NewInt(1_000_000), new(big.Int))
	if r.Sign() != 0 {
		q.Add(q, big.NewInt(1))
	}
	return Nanos(q.Int64())
}

func TestCostRejectsBadCounts(t *testing.T) {
	t.Parallel()
	table := Default()
	tests := []struct {
		name                       string
		prompt, cached, completion int
		wantErr                    string
	}{
		{"negative prompt", -1, 0, 0, "negative token count"},
		{"negative cached", 10, -1, 0, "negative token count"},
		{"negative completion", 10, 0, -5, "negative token count"},
		{"cached exceeds prompt", 10, 11, 0, "cached prompt tokens (11) exceed prompt tokens (10)"},
	}
	for _, tt := range tests {
		got, err := table.Cost("gpt-4o-mini", tt.prompt, tt.cached, tt.completion)
		if err == nil {
			t.Errorf("%s: Cost = %d, want error", tt.name, got)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "gpt-4o-mini") {
			t.Errorf("%s: error %q, want it to name the model and contain %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestPriceResolvesSnapshots(t *testing.T) {
	t.Parallel()
	table := Default()
	tests := []struct {
		model string
		base  string
	}{
		{"gpt-4o-mini-2024-07-18", "gpt-4o-mini"},
		{"gpt-4o-2024-08-06", "gpt-4o"},
		{"gpt-4o-2024-11-20", "gpt-4o"},
		{"gpt-4o-2024-05-13", "gpt-4o-2024-05-13"}, // listed itself: its own (higher) price
		{"gpt-4-turbo-2024-04-09", "gpt-4-turbo"},
		{"gpt-4-0613", "gpt-4"},
		{"gpt-3.5-turbo-0125", "gpt-3.5-turbo"},
		{"gpt-4.1-2025-04-14", "gpt-4.1"},
		{"gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"},
		{"gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"},
		{"o3-2025-04-16", "o3"},
		{"o3-mini-2025-01-31", "o3-mini"},
		{"o4-mini-2025-04-16", "o4-mini"},
		{"gpt-5-2025-08-07", "gpt-5"},
		{"gpt-5-mini-2025-08-07", "gpt-5-mini"},
		{"gpt-5-nano-2025-08-07", "gpt-5-nano"},
	}
	for _, tt := range tests {
		got, err := table.Price(tt.model)
		if err != nil {
			t.Errorf("Price(%q): %v", tt.model, err)
			continue
		}
		want, err := table.Price(tt.base)
		if err != nil {
			t.Fatalf("Price(%q): %v", tt.base, err)
		}
		if got != want {
			t.Errorf("Price(%q) = %+v, want %s's %+v", tt.model, got, tt.base, want)
		}
	}
}

func TestPriceDoesNotConfuseFamilies(t *testing.T) {
	t.Parallel()
	table := Default()
	tests := []struct {
		model string
		want  Price
	}{
		{"gpt-4o", Price{Input: 2_500_000_000, CachedInput: 1_250_000_000, Output: 10_000_000_000}},
		{"gpt-4o-mini", Price{Input: 150_000_000, CachedInput: 75_000_000, Output: 600_000_000}},
		{"gpt-4o-2024-08-06", Price{Input: 2_500_000_000, CachedInput: 1_250_000_000, Output: 10_000_000_000}},
		{"gpt-4o-mini-2024-07-18", Price{Input: 150_000_000, CachedInput: 75_000_000, Output: 600_000_000}},
		{"gpt-4o-2024-05-13", Price{Input: 5_000_000_000, CachedInput: 5_000_000_000, Output: 15_000_000_000}},
		{"o3", Price{Input: 2_000_000_000, CachedInput: 500_000_000, Output: 8_000_000_000}},
		{"o3-mini", Price{Input: 1_100_000_000, CachedInput: 550_000_000, Output: 4_400_000_000}},
		{"gpt-4", Price{Input: 30_000_000_000, CachedInput: 30_000_000_000, Output: 60_000_000_000}},
		{"gpt-4-turbo", Price{Input: 10_000_000_000, CachedInput: 10_000_000_000, Output: 30_000_000_000}},
	}
	for _, tt := range tests {
		got, err := table.Price(tt.model)
		if err != nil {
			t.Errorf("Price(%q): %v", tt.model, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Price(%q) = %+v, want %+v", tt.model, got, tt.want)
		}
	}
}

func TestUnknownModel(t *testing.T) {
	t.Parallel()
	table := Default()
	for _, model := range []string{
		"",
		"gpt-9",
		"gpt-4o-minix",           // no prefix matching
		"gpt-4o-mini-tts",        // a different product, not a snapshot
		"gpt-4o-mini-2024-13-45", // not a date
		"gpt-4-1106-preview",     // suffix is not trailing
		"gpt-3.5-turbo-16k-0613",
		"gpt-4o-",
		"-2024-08-06",
		"GPT-4O", // names are case-sensitive
		"o3-pro",
	} {
		p, err := table.Price(model)
		if !errors.Is(err, ErrUnknownModel) {
			t.Errorf("Price(%q) = %+v, %v; want ErrUnknownModel", model, p, err)
			continue
		}
		if !strings.Contains(err.Error(), `"`+model+`"`) {
			t.Errorf("Price(%q) error %q does not name the model", model, err)
		}
		if c, err := table.Cost(model, 10, 0, 10); !errors.Is(err, ErrUnknownModel) || c != 0 {
			t.Errorf("Cost(%q) = %d, %v; want 0, ErrUnknownModel", model, c, err)
		}
	}
}

func TestModelsSorted(t *testing.T) {
	t.Parallel()
	models := Default().Models()
	if !slices.IsSorted(models) {
		t.Errorf("Models() not sorted: %v", models)
	}
	for _, want := range []string{"gpt-4o-mini", "gpt-4o", "gpt-4-turbo", "gpt-4", "gpt-3.5-turbo", "gpt-5"} {
		if !slices.Contains(models, want) {
			t.Errorf("Models() = %v, missing %q", models, want)
		}
	}
}

func TestChargeUnknownModelAtDearestPrice(t *testing.T) {
	t.Parallel()
	tab := Default()
	cost, known, err := tab.Charge("mystery", 1_000_000, 0, 1_000_000)
	if err != nil || known {
		t.Fatalf("Charge(mystery) = %v, known %v, err %v", cost, known, err)
	}
	for _, m := range tab.Models() {
		c, _ := tab.Cost(m, 1_000_000, 0, 1_000_000)
		if c > cost {
			t.Fatalf("unknown model charged %v, less than %s's %v", cost, m, c)
		}
	}
	want, _ := tab.Cost("gpt-4o-mini", 10, 5, 3)
	if got, known, err := tab.Charge("gpt-4o-mini", 10, 5, 3); got != want || !known || err != nil {
		t.Fatalf("Charge(gpt-4o-mini) = %v, %v, %v; want %v", got, known, err, want)
	}
	if _, _, err := tab.Charge("mystery", 1, 2, 0); err == nil {
		t.Fatal("cached > prompt accepted for an unknown model")
	}
}
