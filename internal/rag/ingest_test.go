package rag

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// writeFiles creates files (name → content) under a new temporary folder.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// bucketChunks returns every chunk stored in kv by key.
func bucketChunks(t *testing.T, kv jetstream.KeyValue) map[string]Chunk {
	t.Helper()
	ctx := context.Background()
	keys, err := kv.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		t.Fatalf("listing keys: %v", err)
	}
	out := make(map[string]Chunk, len(keys))
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			t.Fatalf("getting %s: %v", k, err)
		}
		var c Chunk
		if err := json.Unmarshal(e.Value(), &c); err != nil {
			t.Fatalf("decoding %s: %v", k, err)
		}
		out[k] = c
	}
	return out
}

func TestIngest(t *testing.T) {
	t.Parallel()
	good := map[string]string{
		"guide.md":               "# Guide\n\nIntro.\n\n## Limits\n\nThirty requests a day.\n",
		"notes.txt":              "Plain notes without headings.",
		"sub/deep/more.MARKDOWN": "# More\n\nNested file.\n\nSecond paragraph.",
	}
	files := map[string]string{
		"binary.md":         "# Bin\n\x00\x01\x02 not text",
		"empty.md":          " \n\t\n",
		"latin1.txt":        "caf\xe9 au lait",
		"only-headings.md":  "# Title\n## Sub\n",
		"ignored.go":        "package ignored",
		".hidden/secret.md": "# Hidden\n\nNot read.",
	}
	var want []Chunk
	for name, content := range good {
		files[name] = content
		want = append(want, Split(name, []byte(content), 0)...)
	}
	if len(want) != 4 {
		t.Fatalf("test documents give %d chunks, want 4", len(want))
	}
	dir := writeFiles(t, files)
	kv := newKV(t)

	var progress strings.Builder
	rep, err := Ingest(context.Background(), kv, dir, &progress)
	if err != nil {
		t.Fatalf("Ingest: %v", err)
	}
	if rep.Files != 3 || rep.Chunks != 4 || rep.Skipped != 0 || rep.Added() != 4 || rep.Failed != 4 || rep.Duration <= 0 {
		t.Errorf("first run: %+v, want 3 files, 4 chunks, 0 skipped, 4 added, 4 failed", rep)
	}
	wantErrors := []string{
		"binary.md: binary file",
		"empty.md: empty file",
		"latin1.txt: not valid UTF-8",
		"only-headings.md: no text outside headings",
	}
	if !slices.Equal(rep.Errors, wantErrors) { // files are visited in lexical order
		t.Errorf("Errors:\n got %q\nwant %q", rep.Errors, wantErrors)
	}
	if got, line := progress.String(), "ingest: 7/7 files, 4 chunks (4 new)\n"; !strings.HasSuffix(got, line) {
		t.Errorf("progress = %q, want it to end with %q", got, line)
	}

	stored := bucketChunks(t, kv)
	if len(stored) != len(want) {
		t.Errorf("bucket holds %d chunks, want %d", len(stored), len(want))
	}
	for _, c := range want {
		if stored[c.ID] != c {
			t.Errorf("bucket has %+v under %s, want %+v", stored[c.ID], c.ID, c)
		}
	}
	if src := stored[ChunkID("Nested file.\n\nSecond paragraph.")].Source; src != "sub/deep/more.MARKDOWN" {
		t.Errorf("source = %q, want the path relative to the folder", src)
	}

	// A second run finds everything in place and stores nothing.
	progress.Reset()
	again, err := Ingest(context.Background(), kv, dir, &progress)
	if err != nil {
		t.Fatalf("second Ingest: %v", err)
	}
	if again.Files != 3 || again.Chunks != 4 || again.Skipped != 4 || again.Added() != 0 || again.Failed != 4 {
		t.Errorf("second run: %+v, want 3 files, 4 chunks all skipped, 4 failed", again)
	}
	if got, line := progress.String(), "ingest: 7/7 files, 4 chunks (0 new)\n"; !strings.HasSuffix(got, line) {
		t.Errorf("progress = %q, want it to end with %q", got, line)
	}
	if n := len(bucketChunks(t, kv)); n != len(want) {
		t.Errorf("after the second run the bucket holds %d chunks, want %d", n, len(want))
	}
}

func TestIngestProgress(t *testing.T) {
	t.Parallel()
	files := make(map[string]string)
	for _, c := range "abcdefghijklmnopqrstuvwxyz0123" { // 30 files: one line at 25, one at the end
		files[string(c)+".txt"] = "Document " + string(c) + "."
	}
	var progress strings.Builder
	rep, err := Ingest(context.Background(), newKV(t), writeFiles(t, files), &progress)
	if err != nil {
		t.Fatalf("Ingest: %v", err)
	}
	if rep.Added() != 30 {
		t.Errorf("added %d chunks, want 30", rep.Added())
	}
	if got := progress.String(); !strings.Contains(got, "ingest: 25/30 files, 25 chunks (25 new)\n") ||
		!strings.HasSuffix(got, "ingest: 30/30 files, 30 chunks (30 new)\n") {
		t.Errorf("progress = %q", got)
	}
}

func TestIngestSingleFile(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{"one.md": "# One\n\nText.", "two.md": "# Two\n\nMore."})
	kv := newKV(t)

	rep, err := Ingest(context.Background(), kv, filepath.Join(dir, "one.md"), nil)
	if err != nil {
		t.Fatalf("Ingest: %v", err)
	}
	if rep.Files != 1 || rep.Added() != 1 {
		t.Errorf("report %+v, want 1 file and 1 chunk added", rep)
	}
	stored := bucketChunks(t, kv)
	if c, ok := stored[ChunkID("Text.")]; len(stored) != 1 || !ok || c.Source != "one.md" {
		t.Errorf("bucket = %+v, want one chunk from one.md", stored)
	}
}

func TestIngestRejectsUnsupportedFileByName(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{"page.html": "<p>hello</p>"})
	rep, err := Ingest(context.Background(), newKV(t), filepath.Join(dir, "page.html"), nil)
	if err != nil {
		t.Fatalf("Ingest: %v", err)
	}
	want := []string{"page.html: not a .md, .markdown or .txt file"}
	if rep.Failed != 1 || !slices.Equal(rep.Errors, want) {
		t.Errorf("report %+v, want 1 failed: %q", rep, want)
	}
}

func TestIngestMissingPath(t *testing.T) {
	t.Parallel()
	_, err := Ingest(context.Background(), newKV(t), filepath.Join(t.TempDir(), "nope"), nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want os.ErrNotExist", err)
	}
}

func TestIngestCanceled(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rep, err := Ingest(ctx, kv, corpusDir, nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if rep.Chunks != 0 || len(bucketChunks(t, kv)) != 0 {
		t.Errorf("canceled run stored chunks: %+v", rep)
	}
}

func TestIngestBucketGone(t *testing.T) {
	t.Parallel()
	js := connect(t, startServer(t))
	kv := chunksBucket(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := js.DeleteKeyValue(ctx, ChunksBucket); err != nil {
		t.Fatal(err)
	}

	_, err := Ingest(ctx, kv, corpusDir, nil)
	if err == nil || !strings.Contains(err.Error(), "storing chunk") {
		t.Errorf("err = %v, want a failure storing a chunk", err)
	}
}
