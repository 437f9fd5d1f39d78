// Package pricing turns token usage into money.
//
// It holds a table of per-model prices, in dollars per million input, cached
// input and output tokens, with built-in defaults for OpenAI models that a
// pricing file (PRICING_FILE) can override or extend. Costs are computed in
// integer nano-dollars ([Nanos]) with 128-bit intermediates and rounded up
// once, so sums are exact and never drift the way float dollars do. An
// unknown model is an error ([ErrUnknownModel]), never a free request.
package pricing

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"slices"
	"time"
)

// PricesAsOf and PricesSource record when and where the default prices were
// taken: OpenAI's published list prices, standard tier, in USD per million
// tokens. Batch, flex and priority tiers are not modelled.
const (
	PricesAsOf   = "2025-08-07"
	PricesSource = "https://openai.com/api/pricing/ (standard tier)"
)

// tokensPerPrice is the number of tokens a Price is quoted for.
const tokensPerPrice = 1_000_000

// ErrUnknownModel is returned when a model has no price in the table.
var ErrUnknownModel = errors.New("unknown model")

// Price is what a model charges per million tokens, in nano-dollars (so
// Input = 150_000_000 means $0.15 per million input tokens).
type Price struct {
	Input       Nanos // prompt tokens not served from the prompt cache
	CachedInput Nanos // prompt tokens served from the prompt cache
	Output      Nanos // completion tokens, reasoning tokens included
}

// Table maps model names to prices. Build one with [Default] or [Load]; it is
// immutable afterwards and safe for concurrent use.
type Table struct {
	prices map[string]Price
}

// Default returns a table with the built-in prices (see [PricesAsOf]).
// Models without a cached-input discount charge the input price for cached
// tokens.
func Default() *Table {
	const usd = NanosPerUSD
	return &Table{prices: map[string]Price{
		"gpt-4o-mini": {Input: 0.15 * usd, CachedInput: 0.075 * usd, Output: 0.60 * usd},
		"gpt-4o":      {Input: 2.50 * usd, CachedInput: 1.25 * usd, Output: 10.00 * usd},
		// The first gpt-4o snapshot kept its launch price and has no cache
		// discount; listing it stops it resolving to gpt-4o.
		"gpt-4o-2024-05-13": {Input: 5.00 * usd, CachedInput: 5.00 * usd, Output: 15.00 * usd},
		"gpt-4-turbo":       {Input: 10.00 * usd, CachedInput: 10.00 * usd, Output: 30.00 * usd},
		"gpt-4":             {Input: 30.00 * usd, CachedInput: 30.00 * usd, Output: 60.00 * usd},
		"gpt-3.5-turbo":     {Input: 0.50 * usd, CachedInput: 0.50 * usd, Output: 1.50 * usd},
		"gpt-4.1":           {Input: 2.00 * usd, CachedInput: 0.50 * usd, Output: 8.00 * usd},
		"gpt-4.1-mini":      {Input: 0.40 * usd, CachedInput: 0.10 * usd, Output: 1.60 * usd},
		"gpt-4.1-nano":      {Input: 0.10 * usd, CachedInput: 0.025 * usd, Output: 0.40 * usd},
		"o3":                {Input: 2.00 * usd, CachedInput: 0.50 * usd, Output: 8.00 * usd},
		"o3-mini":           {Input: 1.10 * usd, CachedInput: 0.55 * usd, Output: 4.40 * usd},
		"o4-mini":           {Input: 1.10 * usd, CachedInput: 0.275 * usd, Output: 4.40 * usd},
		"gpt-5":             {Input: 1.25 * usd, CachedInput: 0.125 * usd, Output: 10.00 * usd},
		"gpt-5-mini":        {Input: 0.25 * usd, CachedInput: 0.025 * usd, Output: 2.00 * usd},
		"gpt-5-nano":        {Input: 0.05 * usd, CachedInput: 0.005 * usd, Output: 0.40 * usd},
	}}
}

// Price returns the price of model. A name that is not in the table but ends
// in a snapshot date ("gpt-4o-2024-08-06", "gpt-4-0613") is priced as its base
// model ("gpt-4o", "gpt-4"). Names are otherwise matched exactly, so one
// family is never priced as another ("gpt-4o-mini" is not "gpt-4o").
// It returns an error wrapping [ErrUnknownModel] if neither name is listed.
func (t *Table) Price(model string) (Price, error) {
	if p, ok := t.prices[model]; ok {
		return p, nil
	}
	if base, ok := snapshotBase(model); ok {
		if p, ok := t.prices[base]; ok {
			return p, nil
		}
	}
	return Price{}, fmt.Errorf("%w %q", ErrUnknownModel, model)
}

// Cost returns what a request to model cost: uncached prompt tokens at the
// input price, cached prompt tokens at the cached-input price and completion
// tokens at the output price. promptTokens includes cachedPromptTokens, as in
// OpenAI's usage object.
//
// The sum is exact (128-bit integer math, no overflow for any int inputs) and
// rounded up to a whole nano-dollar once, at the end. Negative counts, more
// cached than prompt tokens, an unknown model, or a total beyond the range
// of Nanos are errors.
func (t *Table) Cost(model string, promptTokens, cachedPromptTokens, completionTokens int) (Nanos, error) {
	if promptTokens < 0 || cachedPromptTokens < 0 || completionTokens < 0 {
		return 0, fmt.Errorf("pricing %q: negative token count (prompt %d, cached %d, completion %d)",
			model, promptTokens, cachedPromptTokens, completionTokens)
	}
	if cachedPromptTokens > promptTokens {
		return 0, fmt.Errorf("pricing %q: cached prompt tokens (%d) exceed prompt tokens (%d)",
			model, cachedPromptTokens, promptTokens)
	}
	p, err := t.Price(model)
	if err != nil {
		return 0, err
	}
	return p.cost(model, promptTokens, cachedPromptTokens, completionTokens)
}

// Charge is Cost that never lets a model go unbilled: a model missing from
// the table is charged at the dearest price the table knows for each kind
// of token, and known reports false so the caller can raise the alarm.
func (t *Table) Charge(model string, promptTokens, cachedPromptTokens, completionTokens int) (cost Nanos, known bool, err error) {
	cost, err = t.Cost(model, promptTokens, cachedPromptTokens, completionTokens)
	if !errors.Is(err, ErrUnknownModel) {
		return cost, err == nil, err
	}
	var dearest Price
	for _, p := range t.prices {
		dearest.Input = max(dearest.Input, p.Input)
		dearest.CachedInput = max(dearest.CachedInput, p.CachedInput)
		dearest.Output = max(dearest.Output, p.Output)
	}
	cost, err = dearest.cost(model, promptTokens, cachedPromptTokens, completionTokens)
	return cost, false, err
}

// cost prices validated token counts at p.
func (p Price) cost(model string, promptTokens, cachedPromptTokens, completionTokens int) (Nanos, error) {
	// Prices are validated non-negative when a table is built, and the counts
	// were checked above, so the conversions to uint64 are exact. Each product
	// is below 2^126, so three of them cannot overflow 128 bits.
	var sum uint128
	sum.addMul(uint64(promptTokens-cachedPromptTokens), uint64(p.Input))
	sum.addMul(uint64(cachedPromptTokens), uint64(p.CachedInput))
	sum.addMul(uint64(completionTokens), uint64(p.Output))

	cost, ok := sum.divCeil(tokensPerPrice)
	if !ok || cost > math.MaxInt64 {
		return 0, fmt.Errorf("pricing %q: cost of %d prompt and %d completion tokens overflows",
			model, promptTokens, completionTokens)
	}
	return Nanos(cost), nil
}

// Models returns the names in the table, sorted.
func (t *Table) Models() []string {
	return slices.Sorted(maps.Keys(t.prices))
}

// snapshotBase strips a snapshot suffix, either a date ("-2024-08-06") or a
// month and day ("-0613"), from a model name. It reports false if the name
// has no such suffix or nothing would be left.
func snapshotBase(model string) (string, bool) {
	for _, layout := range []string{"2006-01-02", "0102"} {
		cut := len(model) - len(layout) - 1 // index of the dash
		if cut < 1 || model[cut] != '-' {
			continue
		}
		if _, err := time.Parse(layout, model[cut+1:]); err == nil {
			return model[:cut], true
		}
	}
	return "", false
}

// uint128 is an unsigned 128-bit integer, enough to hold token counts times
// prices before dividing down to nano-dollars.
type uint128 struct{ hi, lo uint64 }

// addMul adds a*b to u. The caller keeps the total below 2^128.
func (u *uint128) addMul(a, b uint64) {
	hi, lo := bits.Mul64(a, b)
	var carry uint64
	u.lo, carry = bits.Add64(u.lo, lo, 0)
	u.hi, _ = bits.Add64(u.hi, hi, carry)
}

// divCeil returns u/d rounded up, and false if the quotient does not fit in a
// uint64.
func (u uint128) divCeil(d uint64) (uint64, bool) {
	if u.hi >= d {
		return 0, false
	}
	q, r := bits.Div64(u.hi, u.lo, d)
	if r != 0 {
		if q == math.MaxUint64 {
			return 0, false
		}
		q++
	}
	return q, true
}
