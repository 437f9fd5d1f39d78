package alert

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves goroutines behind: a Run loop, a
// NATS watcher, an SMTP session.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
