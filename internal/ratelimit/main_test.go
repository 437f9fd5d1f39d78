package ratelimit

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves goroutines behind, such as a NATS
// connection or server that outlived its test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
