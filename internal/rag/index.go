package rag

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/analysis/lang/en"
	"github.com/blevesearch/bleve/v2/index/scorch"
	"github.com/blevesearch/bleve/v2/mapping"
	"github.com/blevesearch/bleve/v2/search/query"
	bleveindex "github.com/blevesearch/bleve_index_api"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrClosed is returned by [Index.Search] after [Index.Close].
var ErrClosed = errors.New("rag: index closed")

const (
	// DefaultK is the number of passages Search returns when asked for k <= 0.
	DefaultK = 5

	// Boosts of the title and section fields relative to the text.
	titleBoost   = 1.2
	sectionBoost = 1.5

	// Live updates are gathered for flushDelay, or until there are
	// maxBatch of them, and indexed as one bleve batch.
	flushDelay = 100 * time.Millisecond
	maxBatch   = 1000

	// An in-memory scorch index never merges its segments, and each batch
	// adds one. Once live batches have added maxSegments, the index is
	// rebuilt from the documents in one batch, so one segment.
	maxSegments = 64
)

// Index is an in-memory BM25 index of the chunks in a key-value bucket.
// [Index.Run] keeps it in step with the bucket; [Index.Search] may be
// called from any goroutine at any time, also while Run applies updates.
// Every worker process has its own Index, so nothing on disk is shared or
// locked: the bucket is the only copy that persists.
type Index struct {
	logger  *slog.Logger
	ready   chan struct{}
	running atomic.Bool

	// Tuning, set by NewIndex; tests lower them.
	flushDelay  time.Duration
	maxBatch    int
	maxSegments int

	// Owned by the Run goroutine.
	segments int          // segments added by live batches since the last build
	rebuilds atomic.Int64 // how often the index was rebuilt, for tests

	mu     sync.RWMutex
	bleve  bleve.Index      // swapped by rebuild; read under mu
	docs   map[string]Chunk // every indexed chunk by ID; written only by Run, under mu
	closed bool
}

// NewIndex returns an empty index. A nil logger discards log output.
func NewIndex(logger *slog.Logger) (*Index, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	b, err := newBleve()
	if err != nil {
		return nil, err
	}
	return &Index{
		logger:      logger,
		ready:       make(chan struct{}),
		flushDelay:  flushDelay,
		maxBatch:    maxBatch,
		maxSegments: maxSegments,
		bleve:       b,
		docs:        make(map[string]Chunk),
	}, nil
}

// newBleve creates an empty in-memory bleve index scoring with BM25.
//
// It uses scorch with an empty path, not bleve.NewMemOnly: NewMemOnly
// builds an upsidedown index, which has no field statistics and so
// silently scores with TF-IDF even when the mapping asks for BM25.
func newBleve() (bleve.Index, error) {
	field := func() *mapping.FieldMapping {
		f := bleve.NewTextFieldMapping()
		f.Analyzer = en.AnalyzerName
		f.Store = false // the text is kept in Index.docs
		f.IncludeInAll = false
		f.IncludeTermVectors = false
		f.DocValues = false
		return f
	}
	doc := bleve.NewDocumentStaticMapping()
	doc.AddFieldMappingsAt("text", field())
	doc.AddFieldMappingsAt("title", field())
	doc.AddFieldMappingsAt("section", field())

	m := bleve.NewIndexMapping()
	m.DefaultMapping = doc
	m.DefaultAnalyzer = en.AnalyzerName
	m.ScoringModel = bleveindex.BM25Scoring
	m.IndexDynamic = false
	m.StoreDynamic = false
	m.DocValuesDynamic = false

	b, err := bleve.NewUsing("", m, scorch.Name, scorch.Name, nil)
	if err != nil {
		return nil, fmt.Errorf("creating search index: %w", err)
	}
	return b, nil
}

// Ready returns a channel that is closed once Run has indexed every chunk
// that was in the bucket when it started. It is never closed if Run fails
// before that, so wait on Run's result too.
func (ix *Index) Ready() <-chan struct{} { return ix.ready }

// Len returns the number of chunks indexed.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.docs)
}

// Run feeds the index from kv until ctx ends: first every chunk in the
// bucket, indexed in one batch, after which Ready is closed; then each
// change as it happens, new chunks added and deleted or purged keys
// removed. Values that are not chunks are logged and skipped. Run returns
// nil when ctx ends, and an error if the bucket cannot be watched or the
// index written. It stops its watcher before returning, and may be called
// only once.
func (ix *Index) Run(ctx context.Context, kv jetstream.KeyValue) error {
	if !ix.running.CompareAndSwap(false, true) {
		return errors.New("rag: Index.Run called more than once")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	start := time.Now()
	w, err := kv.WatchAll(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watching bucket %s: %w", kv.Bucket(), err)
	}
	defer func() {
		cancel()
		_ = w.Stop() // also stopped by cancel; an error means it already was
		for range w.Updates() {
			// Drain: the watcher's last delivery may be blocked on a full channel.
		}
	}()

	var (
		pending   = make(map[string]*Chunk) // nil means delete
		replaying = true
		flush     <-chan time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return nil

		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("watching bucket %s: watcher stopped", kv.Bucket())
			}
			if e == nil { // every chunk that was in the bucket has been delivered
				if err := ix.apply(pending, false); err != nil {
					return err
				}
				replaying = false
				close(ix.ready)
				ix.logger.Info("search index ready", "bucket", kv.Bucket(), "chunks", ix.Len(),
					"duration", time.Since(start))
				continue
			}
			pending[e.Key()] = ix.decode(e)
			switch {
			case replaying:
				// Indexed in one batch when the replay ends.
			case len(pending) >= ix.maxBatch:
				if err := ix.apply(pending, true); err != nil {
					return err
				}
				flush = nil
			case flush == nil:
				flush = time.After(ix.flushDelay)
			}

		case <-flush:
			flush = nil
			if err := ix.apply(pending, true); err != nil {
				return err
			}
		}
	}
}

// decode returns the chunk an entry holds, or nil if the entry is a delete
// or purge, or does not hold a chunk (which is logged).
func (ix *Index) decode(e jetstream.KeyValueEntry) *Chunk {
	if e.Operation() != jetstream.KeyValuePut {
		return nil
	}
	var c Chunk
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		ix.logger.Warn("skipping chunk that is not valid JSON", "key", e.Key(),
			"revision", e.Revision(), "err", err)
		return nil
	}
	c.ID = e.Key()
	return &c
}

// apply indexes the pending changes in one batch, then empties pending.
// Live batches count towards maxSegments, past which the index is rebuilt.
// Only the Run goroutine calls apply.
func (ix *Index) apply(pending map[string]*Chunk, live bool) error {
	if len(pending) == 0 {
		return nil
	}
	b := ix.bleve.NewBatch()
	for id, c := range pending {
		if c == nil {
			b.Delete(id)
			continue
		}
		if err := b.Index(id, c); err != nil {
			return fmt.Errorf("indexing chunk %s: %w", id, err)
		}
	}
	if err := ix.bleve.Batch(b); err != nil {
		return fmt.Errorf("indexing %d chunks: %w", len(pending), err)
	}

	ix.mu.Lock()
	for id, c := range pending {
		if c == nil {
			delete(ix.docs, id)
		} else {
			ix.docs[id] = *c
		}
	}
	ix.mu.Unlock()
	clear(pending)

	if live {
		ix.segments++
		if ix.segments > ix.maxSegments {
			return ix.rebuild()
		}
	}
	return nil
}

// rebuild indexes every document into a fresh index in one batch and
// swaps it in. Searches keep using the old index until the swap. Only the
// Run goroutine calls rebuild, so it may read docs without the lock.
func (ix *Index) rebuild() error {
	start := time.Now()
	fresh, err := newBleve()
	if err != nil {
		return err
	}
	b := fresh.NewBatch()
	for id, c := range ix.docs {
		if err := b.Index(id, c); err != nil {
			_ = fresh.Close()
			return fmt.Errorf("rebuilding index: chunk %s: %w", id, err)
		}
	}
	if err := fresh.Batch(b); err != nil {
		_ = fresh.Close()
		return fmt.Errorf("rebuilding index: %w", err)
	}

	ix.mu.Lock()
	old := ix.bleve
	if ix.closed {
		old = fresh
	} else {
		ix.bleve = fresh
	}
	ix.mu.Unlock()
	ix.segments = 0
	ix.rebuilds.Add(1)
	ix.logger.Debug("search index rebuilt", "chunks", len(ix.docs), "duration", time.Since(start))
	if err := old.Close(); err != nil {
		return fmt.Errorf("closing replaced index: %w", err)
	}
	return nil
}

// Search returns the k passages (DefaultK when k <= 0) that best match
// question by BM25 over the chunks' text, title and section, best first.
// No match is an empty result, not an error.
func (ix *Index) Search(ctx context.Context, question string, k int) ([]Passage, error) {
	if k <= 0 {
		k = DefaultK
	}
	match := func(field string, boost float64) query.Query {
		q := bleve.NewMatchQuery(question)
		q.SetField(field)
		q.SetBoost(boost)
		return q
	}
	req := bleve.NewSearchRequestOptions(bleve.NewDisjunctionQuery(
		match("text", 1),
		match("title", titleBoost),
		match("section", sectionBoost),
	), k, 0, false)
	req.SortBy([]string{"-_score", "_id"}) // ties in a stable order

	// The read lock is held for the whole search, so a rebuild cannot
	// close the index being searched.
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if ix.closed {
		return nil, ErrClosed
	}
	res, err := ix.bleve.SearchInContext(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("searching index: %w", err)
	}
	passages := make([]Passage, 0, len(res.Hits))
	for _, h := range res.Hits {
		c, ok := ix.docs[h.ID]
		if !ok {
			continue // indexed a moment ago, or being deleted
		}
		passages = append(passages, Passage{
			ID:      c.ID,
			Title:   c.Title,
			Source:  c.Source,
			Section: c.Section,
			Text:    c.Text,
			Score:   h.Score,
		})
	}
	return passages, nil
}

// Close releases the index. Searches after Close return ErrClosed. Call it
// after Run has returned.
func (ix *Index) Close() error {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.closed {
		return nil
	}
	ix.closed = true
	if err := ix.bleve.Close(); err != nil {
		return fmt.Errorf("closing search index: %w", err)
	}
	return nil
}
