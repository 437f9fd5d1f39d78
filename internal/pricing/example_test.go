package pricing_test

import (
	"fmt"

	"github.com/gravitycar/tollgate/internal/pricing"
)

func ExampleTable_Cost() {
	table := pricing.Default() // or pricing.Load(os.Getenv("PRICING_FILE"))

	// Usage as reported for a dated snapshot: 1,200 prompt tokens, 1,024 of
	// them served from the prompt cache, and 300 completion tokens.
	cost, err := table.Cost("gpt-4o-mini-2024-07-18", 1_200, 1_024, 300)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cost, int64(cost))

	budget, err := pricing.ParseUSD("1.00") // DAILY_BUDGET_USD
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("left today:", budget-cost)

	_, err = table.Cost("gpt-9", 1, 0, 1)
	fmt.Println(err)
	// Output:
	// $0.0002832 283200
	// left today: $0.9997168
	// unknown model "gpt-9"
}
