package rag

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
)

const (
	// maxFileBytes bounds the size of one ingested document.
	maxFileBytes = 8 << 20
	// progressFiles and progressInterval say how often Ingest reports progress.
	progressFiles    = 25
	progressInterval = time.Second
)

// IngestReport says what one [Ingest] run did.
type IngestReport struct {
	Files    int           // documents read and split
	Chunks   int           // chunks those documents produced (new and already stored)
	Skipped  int           // chunks that were already in the bucket
	Failed   int           // documents rejected: unreadable, binary, empty, invalid UTF-8, too large, no text
	Duration time.Duration // how long the run took
	Errors   []string      // one line per rejected document: "path: reason"
}

// Added returns the number of chunks this run stored for the first time.
func (r IngestReport) Added() int { return r.Chunks - r.Skipped }

// Ingest loads the documents at path (a file, or a folder walked
// recursively) into kv. In a folder it reads the files ending in .md,
// .markdown or .txt and ignores other files and hidden folders; a file
// named directly must have one of those extensions too. Each document is cut with
// [Split] and each chunk stored with Create under its ID, so a chunk that
// is already there is counted as Skipped and a second run stores nothing.
//
// A document that cannot be used (unreadable, binary, empty, not UTF-8,
// larger than 8 MiB, or with no text outside its headings) is counted in Failed and described in Errors; the run
// goes on. Ingest returns an error, with the report so far, only when path
// cannot be walked, the bucket cannot be written, or ctx ends.
//
// A progress line is written to progress (which may be nil) every 25
// documents or every second, and once at the end.
func Ingest(ctx context.Context, kv jetstream.KeyValue, path string, progress io.Writer) (IngestReport, error) {
	return IngestInto(ctx, KVSink{KV: kv}, path, progress)
}

// Sink stores chunks for an index: the chunks bucket of the embedded index
// ([KVSink]), or Weaviate. Add must be idempotent by chunk ID and report
// how many chunks were new.
type Sink interface {
	Add(ctx context.Context, chunks []Chunk) (added, skipped int, err error)
}

// KVSink stores chunks in the chunks bucket, with Create under their ID.
type KVSink struct{ KV jetstream.KeyValue }

// Add stores the chunks that are not there yet.
func (s KVSink) Add(ctx context.Context, chunks []Chunk) (added, skipped int, err error) {
	for _, c := range chunks {
		value, err := json.Marshal(c)
		if err != nil {
			return added, skipped, fmt.Errorf("encoding chunk %s of %s: %w", c.ID, c.Source, err)
		}
		_, err = s.KV.Create(ctx, c.ID, value)
		switch {
		case errors.Is(err, jetstream.ErrKeyExists):
			skipped++
		case err != nil:
			return added, skipped, fmt.Errorf("storing chunk %s of %s: %w", c.ID, c.Source, err)
		default:
			added++
		}
	}
	return added, skipped, nil
}

// IngestInto is Ingest into any sink: the documents are walked, checked and
// split the same way, one Add per document.
func IngestInto(ctx context.Context, sink Sink, path string, progress io.Writer) (IngestReport, error) {
	start := time.Now()
	if progress == nil {
		progress = io.Discard
	}
	var rep IngestReport
	files, root, err := documents(path)
	if err != nil {
		return rep, err
	}

	lastReport := start
	for i, file := range files {
		if err := ctx.Err(); err != nil {
			rep.Duration = time.Since(start)
			return rep, fmt.Errorf("ingesting %s: %w", path, err)
		}
		if err := ingestFile(ctx, sink, root, file, &rep); err != nil {
			rep.Duration = time.Since(start)
			return rep, err
		}
		if done := i + 1; done%progressFiles == 0 || time.Since(lastReport) >= progressInterval {
			writeProgress(progress, rep, done, len(files))
			lastReport = time.Now()
		}
	}
	rep.Duration = time.Since(start)
	writeProgress(progress, rep, len(files), len(files))
	return rep, nil
}

// documents lists the files Ingest reads under path, in lexical order, and
// the folder their Source is relative to.
func documents(path string) (files []string, root string, err error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, "", fmt.Errorf("ingesting %s: %w", path, err)
	}
	if !info.IsDir() {
		return []string{path}, filepath.Dir(path), nil
	}
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != path && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if isDocument(p) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("walking %s: %w", path, err)
	}
	return files, path, nil
}

// isDocument reports whether Ingest reads the file at p.
func isDocument(p string) bool {
	switch strings.ToLower(filepath.Ext(p)) {
	case ".md", ".markdown", ".txt":
		return true
	}
	return false
}

// ingestFile splits one document and stores its chunks, updating rep. A
// document that cannot be used is recorded in rep; only bucket and context
// errors are returned.
func ingestFile(ctx context.Context, sink Sink, root, file string, rep *IngestReport) error {
	source, err := filepath.Rel(root, file)
	if err != nil {
		source = filepath.Base(file)
	}
	source = filepath.ToSlash(source)

	var (
		content []byte
		chunks  []Chunk
	)
	if isDocument(file) {
		content, err = readDocument(file)
	} else {
		err = errors.New("not a .md, .markdown or .txt file") // named on the command line
	}
	if err == nil {
		if chunks = Split(source, content, 0); len(chunks) == 0 {
			err = errors.New("no text outside headings")
		}
	}
	if err != nil {
		rep.Failed++
		rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", source, err))
		return nil
	}

	rep.Files++
	added, skipped, err := sink.Add(ctx, chunks)
	rep.Chunks += added + skipped
	rep.Skipped += skipped
	return err
}

// readDocument reads a file and checks that it is non-empty UTF-8 text.
func readDocument(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	content, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	switch {
	case err != nil:
		return nil, err
	case len(content) > maxFileBytes:
		return nil, fmt.Errorf("larger than %d bytes", maxFileBytes)
	case bytes.IndexByte(content, 0) >= 0:
		return nil, errors.New("binary file")
	case !utf8.Valid(content):
		return nil, errors.New("not valid UTF-8")
	case len(bytes.TrimSpace(content)) == 0:
		return nil, errors.New("empty file")
	}
	return content, nil
}

func writeProgress(w io.Writer, rep IngestReport, done, total int) {
	// Progress is best effort: a broken progress writer must not stop ingestion.
	_, _ = fmt.Fprintf(w, "ingest: %d/%d files, %d chunks (%d new)\n", done, total, rep.Chunks, rep.Added())
}
