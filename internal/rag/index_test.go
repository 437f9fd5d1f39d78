package rag

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// eventually is the deadline for an index to catch up with its bucket.
const eventually = 20 * time.Second

// waitFor polls cond until it holds, failing the test after eventually.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(eventually)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("after %v: %s", eventually, what)
		case <-tick.C:
		}
	}
}

// search runs a search and fails the test on an error.
func search(t *testing.T, ix *Index, question string, k int) []Passage {
	t.Helper()
	ps, err := ix.Search(context.Background(), question, k)
	if err != nil {
		t.Fatalf("Search(%q): %v", question, err)
	}
	return ps
}

// putChunk stores a chunk with this text in kv and returns it.
func putChunk(t *testing.T, kv jetstream.KeyValue, title, text string) Chunk {
	t.Helper()
	c := Chunk{ID: ChunkID(text), Title: title, Source: title + ".md", Text: text}
	value, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(context.Background(), c.ID, value); err != nil {
		t.Fatalf("storing chunk %s: %v", c.ID, err)
	}
	return c
}

// found reports whether a search for question returns the chunk id.
func found(t *testing.T, ix *Index, question, id string) bool {
	t.Helper()
	for _, p := range search(t, ix, question, 20) {
		if p.ID == id {
			return true
		}
	}
	return false
}

func TestIndexSearchesCorpus(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	rep := ingest(t, kv, corpusDir)
	if rep.Failed != 0 || rep.Added() < 30 {
		t.Fatalf("ingesting the sample corpus: %+v", rep)
	}
	ix := runIndex(t, kv, nil)
	waitReady(t, ix)
	if ix.Len() != rep.Chunks {
		t.Fatalf("Len = %d after Ready, want %d", ix.Len(), rep.Chunks)
	}

	tests := []struct{ question, source string }{
		{"How many requests can I make per day?", "rate-limits.md"},
		{"How fast does my token bucket refill?", "rate-limits.md"},
		{"When is the owner emailed about spending?", "budget-and-alerts.md"},
		{"How do I follow my query with server-sent events?", "asking-questions.md"},
		{"Why is my question still queued?", "troubleshooting.md"},
		{"Which variable sets the OpenAI model?", "configuration.md"},
		{"What does the alerter do with the USAGE stream?", "architecture.md"},
		{"How are documents cut into passages?", "ingestion.md"},
	}
	for _, tt := range tests {
		ps := search(t, ix, tt.question, 3)
		if len(ps) == 0 || len(ps) > 3 {
			t.Errorf("%q: %d passages, want 1 to 3", tt.question, len(ps))
			continue
		}
		if ps[0].Source != tt.source {
			t.Errorf("%q: top passage from %s (%s / %s), want %s", tt.question, ps[0].Source, ps[0].Title, ps[0].Section, tt.source)
		}
		for i := 1; i < len(ps); i++ {
			if ps[i-1].Score < ps[i].Score {
				t.Errorf("%q: scores not in descending order: %v < %v", tt.question, ps[i-1].Score, ps[i].Score)
			}
		}
	}

	top := search(t, ix, "How many requests can I make per day?", 0)
	if len(top) != DefaultK {
		t.Errorf("k=0 gave %d passages, want DefaultK=%d", len(top), DefaultK)
	}
	if p := top[0]; p.Title != "Rate limits" || p.Section != "Daily request limit" || !strings.Contains(p.Text, "30 requests per day") {
		t.Errorf("top passage = %+v, want the daily request limit section", p)
	}

	for _, q := range []string{"", "   ", "xylophone zeppelin", "the and of"} {
		if ps := search(t, ix, q, 5); len(ps) != 0 {
			t.Errorf("%q: %d passages, want none", q, len(ps))
		}
	}
}

func TestIndexFollowsBucket(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	first := putChunk(t, kv, "first", "Zebras graze on the savannah at dawn.")
	ix := runIndex(t, kv, nil)
	waitReady(t, ix)
	if ix.Len() != 1 || !found(t, ix, "zebras", first.ID) {
		t.Fatalf("after Ready: Len = %d, want the stored chunk indexed", ix.Len())
	}

	// Added after Ready: searchable without a restart.
	added := putChunk(t, kv, "added", "Penguins huddle together through the polar winter.")
	waitFor(t, "new chunk searchable", func() bool { return found(t, ix, "penguins winter", added.ID) })
	if ix.Len() != 2 {
		t.Errorf("Len = %d, want 2", ix.Len())
	}

	// Deleted and purged keys disappear.
	if err := kv.Delete(context.Background(), first.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "deleted chunk gone", func() bool { return !found(t, ix, "zebras", first.ID) })
	if err := kv.Purge(context.Background(), added.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "purged chunk gone", func() bool { return ix.Len() == 0 })
	if found(t, ix, "penguins", added.ID) {
		t.Error("purged chunk still found")
	}

	// A deleted chunk can come back.
	putChunk(t, kv, "first", first.Text)
	waitFor(t, "re-created chunk searchable", func() bool { return found(t, ix, "zebras", first.ID) })
}

func TestIndexReplaysDeletes(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	gone := putChunk(t, kv, "gone", "Walruses sunbathe on the ice floes.")
	kept := putChunk(t, kv, "kept", "Narwhals swim below the ice.")
	if err := kv.Delete(context.Background(), gone.ID); err != nil {
		t.Fatal(err)
	}

	ix := runIndex(t, kv, nil)
	waitReady(t, ix)
	if ix.Len() != 1 || found(t, ix, "walruses ice", gone.ID) || !found(t, ix, "narwhals ice", kept.ID) {
		t.Errorf("after replay: Len = %d, want only the kept chunk", ix.Len())
	}
}

func TestIndexSkipsValuesThatAreNotChunks(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	if _, err := kv.Put(context.Background(), "garbage", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	ix := runIndex(t, kv, nil)
	waitReady(t, ix)
	if ix.Len() != 0 {
		t.Errorf("Len = %d, want 0", ix.Len())
	}

	// Run is still following the bucket.
	c := putChunk(t, kv, "ok", "Otters hold hands while they sleep.")
	waitFor(t, "chunk after garbage searchable", func() bool { return found(t, ix, "otters", c.ID) })
}

// TestTwoWorkersWhileIngesting runs two indexes on their own connections,
// as two worker processes would, and ingests the corpus while they run.
func TestTwoWorkersWhileIngesting(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	a := runIndex(t, chunksBucket(t, connect(t, s)), nil)
	b := runIndex(t, chunksBucket(t, connect(t, s)), nil)
	waitReady(t, a)
	waitReady(t, b)

	rep := ingest(t, chunksBucket(t, connect(t, s)), corpusDir)
	if rep.Added() == 0 {
		t.Fatalf("ingest added nothing: %+v", rep)
	}
	for name, ix := range map[string]*Index{"a": a, "b": b} {
		waitFor(t, "worker "+name+" has every chunk", func() bool { return ix.Len() == rep.Chunks })
		ps := search(t, ix, "How many requests can I make per day?", 1)
		if len(ps) != 1 || ps[0].Source != "rate-limits.md" {
			t.Errorf("worker %s: top passage %+v, want one from rate-limits.md", name, ps)
		}
	}
}

// TestIndexRebuildsAfterManySegments lowers the segment limit so that live
// updates force rebuilds, and checks nothing is lost across them.
func TestIndexRebuildsAfterManySegments(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	ix := runIndex(t, kv, func(ix *Index) {
		ix.maxSegments = 2
		ix.flushDelay = time.Millisecond
	})
	waitReady(t, ix)

	var chunks []Chunk
	for i := range 8 {
		c := putChunk(t, kv, fmt.Sprint("doc", i), fmt.Sprintf("Item%d is stored in the shared bucket.", i))
		waitFor(t, c.Title+" searchable", func() bool { return found(t, ix, fmt.Sprint("item", i), c.ID) })
		chunks = append(chunks, c)
	}
	if err := kv.Delete(context.Background(), chunks[0].ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "deleted chunk gone", func() bool { return ix.Len() == 7 })

	if ix.rebuilds.Load() == 0 {
		t.Error("no rebuild happened")
	}
	if ps := search(t, ix, "stored shared bucket", 20); len(ps) != 7 {
		t.Errorf("%d passages, want 7", len(ps))
	}
	for _, c := range chunks[1:] {
		if !found(t, ix, c.Text, c.ID) {
			t.Errorf("chunk %s lost", c.Title)
		}
	}
}

func TestIndexLifecycle(t *testing.T) {
	t.Parallel()
	kv := newKV(t)
	ix, err := NewIndex(nil)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx, kv) }()
	waitReady(t, ix)
	if err := ix.Run(ctx, kv); err == nil || !strings.Contains(err.Error(), "more than once") {
		t.Errorf("second Run: %v, want an error", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(eventually):
		t.Fatal("Run did not return after cancel")
	}
	if err := ix.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := ix.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := ix.Search(context.Background(), "anything", 5); !errors.Is(err, ErrClosed) {
		t.Errorf("Search after Close: %v, want ErrClosed", err)
	}
}

func BenchmarkSearch(b *testing.B) {
	kv := newKV(b)
	ingest(b, kv, corpusDir)
	ix := runIndex(b, kv, nil)
	waitReady(b, ix)
	questions := []string{
		"How many requests can I make per day?",
		"When is the owner emailed about spending?",
		"Why is my question still queued?",
		"Which variable sets the OpenAI model?",
	}
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		if _, err := ix.Search(ctx, questions[i%len(questions)], DefaultK); err != nil {
			b.Fatal(err)
		}
	}
}
