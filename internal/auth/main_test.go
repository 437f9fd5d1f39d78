package auth

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves goroutines behind, such as a Verifier's JWKS refresher that
// outlived the context given to NewVerifier.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
