package weaviate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gravitycar/tollgate/internal/rag"
	"github.com/gravitycar/tollgate/internal/weaviatetest"
)

// A Store is where rag.IngestInto can put a folder of documents.
var _ rag.Sink = (*Store)(nil)

// Ingesting a folder into Weaviate: rag walks, checks and splits the
// documents, reports bad ones and goes on, and writes its progress; the
// Store adds each chunk once.
func TestIngestInto(t *testing.T) {
	t.Parallel()
	base := weaviatetest.Shared(t)
	ctx := testCtx(t)
	s := newStore(t, base, nil)

	dir := t.TempDir()
	files, err := filepath.Glob(filepath.Join(corpusDir, "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		content, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{"binary.md": "PK\x00\x03", "empty.txt": " \n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	var progress strings.Builder
	rep, err := rag.IngestInto(ctx, s, dir, &progress)
	if err != nil {
		t.Fatalf("IngestInto: %v", err)
	}
	want := distinct(corpus(t))
	if rep.Files != len(files) || rep.Failed != 2 || rep.Added() != want || len(rep.Errors) != 2 {
		t.Errorf("IngestInto: %+v; want %d files, 2 failed, %d added", rep, len(files), want)
	}
	if !strings.Contains(progress.String(), "chunks") {
		t.Errorf("no progress line: %q", progress.String())
	}
	if n := countObjects(t, base, s.Collection()); n != want {
		t.Errorf("%d objects, want %d", n, want)
	}

	rep, err = rag.IngestInto(ctx, s, dir, nil)
	if err != nil || rep.Added() != 0 || rep.Skipped != rep.Chunks || rep.Chunks == 0 {
		t.Errorf("second IngestInto: %+v, %v; want every chunk skipped", rep, err)
	}
	passages, err := s.Search(ctx, dailyQuestion, 3)
	if err != nil || len(passages) == 0 || passages[0].Source != "rate-limits.md" {
		t.Errorf("Search after IngestInto: %+v, %v", first(passages), err)
	}
}
