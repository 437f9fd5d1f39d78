package weaviate

import (
	"context"
	"fmt"
	"strings"

	"github.com/go-openapi/strfmt"
	"github.com/google/uuid"
	"github.com/weaviate/weaviate-go-client/v4/weaviate/filters"
	"github.com/weaviate/weaviate-go-client/v4/weaviate/graphql"
	"github.com/weaviate/weaviate/entities/models"

	"github.com/gravitycar/tollgate/internal/rag"
)

// batchSize is the number of chunks looked up, embedded and imported
// together.
const batchSize = 100

// idNamespace is the UUID namespace of object IDs: an object's ID is the
// name-based (version 5) UUID of its content hash in it, so the same text
// always lands on the same object.
var idNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/gravitycar/tollgate/chunk"))

// ObjectID returns the ID of the object that holds the chunk with this
// content hash ([rag.Chunk.ID]).
func ObjectID(contentHash string) string {
	return uuid.NewSHA1(idNamespace, []byte(contentHash)).String()
}

// Add stores chunks that are not in the collection yet, in batches of 100,
// and returns how many it added and how many were already there (or
// repeated in chunks). Adding the same chunks again adds nothing.
//
// A chunk's identity is its content hash (rag.Chunk.ID, computed with
// rag.ChunkID if empty): the object's ID is derived from it, so two
// processes adding the same chunk at once write one object. When the store
// has an embedding function, each new chunk is stored with the vector of
// its title, section and text; chunks already there are not embedded
// again.
//
// On error, added and skipped count the batches stored before it.
func (s *Store) Add(ctx context.Context, chunks []rag.Chunk) (added, skipped int, err error) {
	unique := make([]rag.Chunk, 0, len(chunks))
	seen := make(map[string]bool, len(chunks))
	for _, c := range chunks {
		if c.ID == "" {
			c.ID = rag.ChunkID(c.Text)
		}
		if seen[c.ID] {
			skipped++
			continue
		}
		seen[c.ID] = true
		unique = append(unique, c)
	}

	for start := 0; start < len(unique); start += batchSize {
		batch := unique[start:min(start+batchSize, len(unique))]
		n, err := s.addBatch(ctx, batch)
		if err != nil {
			return added, skipped, err
		}
		added += n
		skipped += len(batch) - n
	}
	return added, skipped, nil
}

// addBatch stores the chunks of batch (distinct IDs, at most batchSize)
// that are not in the collection and returns how many that was.
func (s *Store) addBatch(ctx context.Context, batch []rag.Chunk) (int, error) {
	ids := make([]string, len(batch))
	for i, c := range batch {
		ids[i] = c.ID
	}
	present, err := s.present(ctx, ids)
	if err != nil {
		return 0, err
	}
	var missing []rag.Chunk
	for _, c := range batch {
		if !present[c.ID] {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return 0, nil
	}

	var vectors [][]float32
	if s.embed != nil {
		texts := make([]string, len(missing))
		for i, c := range missing {
			texts[i] = embedText(c)
		}
		if vectors, err = s.embed(ctx, texts); err != nil {
			return 0, fmt.Errorf("embedding %d chunks: %w", len(texts), err)
		}
		if err := checkVectors(vectors, len(texts)); err != nil {
			return 0, fmt.Errorf("embedding %d chunks: %w", len(texts), err)
		}
	}

	objects := make([]*models.Object, len(missing))
	for i, c := range missing {
		objects[i] = &models.Object{
			Class: s.collection,
			ID:    strfmt.UUID(ObjectID(c.ID)),
			Properties: map[string]any{
				propText:        c.Text,
				propTitle:       c.Title,
				propSource:      c.Source,
				propSection:     c.Section,
				propContentHash: c.ID,
			},
		}
		if vectors != nil {
			objects[i].Vector = vectors[i]
		}
	}
	results, err := s.client.Batch().ObjectsBatcher().WithObjects(objects...).Do(ctx)
	if err != nil {
		return 0, wrap(fmt.Sprintf("importing %d chunks into %s", len(objects), s.collection), err)
	}
	// A batch answer is 200 even when objects fail; each carries its own result.
	var failures []string
	for _, r := range results {
		if r.Result == nil || r.Result.Errors == nil {
			continue
		}
		for _, e := range r.Result.Errors.Error {
			if e != nil {
				failures = append(failures, fmt.Sprintf("%s: %s", r.ID, e.Message))
			}
		}
	}
	if len(failures) > 0 {
		if len(failures) > 3 {
			failures = append(failures[:3], fmt.Sprintf("and %d more", len(failures)-3))
		}
		return 0, fmt.Errorf("importing %d chunks into %s: %d failed: %s",
			len(objects), s.collection, len(failures), strings.Join(failures, "; "))
	}
	return len(missing), nil
}

// present returns which of the content hashes ids are in the collection.
func (s *Store) present(ctx context.Context, ids []string) (map[string]bool, error) {
	gql := s.client.GraphQL()
	resp, err := gql.Get().
		WithClassName(s.collection).
		WithWhere(filters.Where().
			WithPath([]string{propContentHash}).
			WithOperator(filters.ContainsAny).
			WithValueText(ids...)).
		WithLimit(len(ids)).
		WithFields(graphql.Field{Name: propContentHash}).
		Do(ctx)
	if err != nil {
		return nil, wrap(fmt.Sprintf("looking up %d chunks in %s", len(ids), s.collection), err)
	}
	var found []struct {
		ContentHash string `json:"contentHash"`
	}
	if err := decodeGet(resp, s.collection, &found); err != nil {
		return nil, fmt.Errorf("looking up %d chunks in %s: %w", len(ids), s.collection, err)
	}
	present := make(map[string]bool, len(found))
	for _, f := range found {
		present[f.ContentHash] = true
	}
	return present, nil
}

// embedText is what a chunk's vector is computed from: where it sits, then
// what it says.
func embedText(c rag.Chunk) string {
	var b strings.Builder
	b.WriteString(c.Title)
	if c.Section != "" {
		b.WriteString(" > ")
		b.WriteString(c.Section)
	}
	b.WriteString("\n\n")
	b.WriteString(c.Text)
	return b.String()
}

// checkVectors reports whether an embedding function returned want
// non-empty vectors of one length.
func checkVectors(vectors [][]float32, want int) error {
	if len(vectors) != want {
		return fmt.Errorf("got %d vectors for %d texts", len(vectors), want)
	}
	for i, v := range vectors {
		if len(v) == 0 || len(v) != len(vectors[0]) {
			return fmt.Errorf("vector %d has %d dimensions, vector 0 has %d", i, len(v), len(vectors[0]))
		}
	}
	return nil
}
