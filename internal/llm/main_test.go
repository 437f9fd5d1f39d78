package llm

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// IgnoreCurrent: goroutines that imported packages start at init (bleve's
	// analysis workers, through rag) are not ours to check.
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}
