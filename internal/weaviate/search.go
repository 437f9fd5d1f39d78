package weaviate

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/weaviate/weaviate-go-client/v4/weaviate/graphql"
	"github.com/weaviate/weaviate/entities/models"

	"github.com/gravitycar/tollgate/internal/rag"
)

// searchProperties are the properties BM25 searches. They are not
// boosted: Weaviate 1.35 parses a boost with strconv.Atoi (so "title^1.2"
// silently weighs 0), and its WAND pruning leaves boosts out of its score
// bounds, so a boosted search drops some of the best objects
// (weaviate/weaviate#12018, fixed after 1.35.2).
var searchProperties = []string{propText, propTitle, propSection}

// minCandidates is the number of objects a search asks Weaviate for, at
// least, before keeping the best k. Weaviate 1.35.2's BM25 (block-max
// WAND) prunes too eagerly when the limit is small, above all for objects
// still in the memtable, that is written in the last minute or so
// (weaviate/weaviate#11780 and #12022, fixed after 1.35.2): with limit 5,
// a third of the test questions on the freshly ingested sample corpus
// missed their best passage, which a limit of 20 or more returns. Asking
// for 50 costs a larger answer (about 50 chunks of text), and makes such
// misses rare, not impossible.
const minCandidates = 50

// Hybrid search settings: alpha is the weight of the vector search against
// BM25 (Weaviate's default), and relative-score fusion keeps how much
// better one hit is than the next, not only the order.
const hybridAlpha = 0.75

// resultFields are the fields every search asks for.
var resultFields = []graphql.Field{
	{Name: propText}, {Name: propTitle}, {Name: propSource}, {Name: propSection}, {Name: propContentHash},
	{Name: "_additional", Fields: []graphql.Field{{Name: "score"}}},
}

// Search returns the k passages (rag.DefaultK when k <= 0) that best match
// question, best first, as [rag.Index.Search] does: Score higher is better
// and comparable only within one search, Passage.ID is the chunk's content
// hash. It uses BM25 over text, title and section, or, when the store has
// an embedding function, hybrid search: BM25 fused with the nearest
// vectors to the question's. No match is an empty result, not an error.
func (s *Store) Search(ctx context.Context, question string, k int) ([]rag.Passage, error) {
	if k <= 0 {
		k = rag.DefaultK
	}
	query := cleanQuery(question)
	if query == "" {
		return []rag.Passage{}, nil
	}

	gql := s.client.GraphQL()
	get := gql.Get().WithClassName(s.collection).WithFields(resultFields...).WithLimit(max(k, minCandidates))
	if s.embed == nil {
		get = get.WithBM25(gql.Bm25ArgBuilder().WithQuery(query).WithProperties(searchProperties...))
	} else {
		vectors, err := s.embed(ctx, []string{query})
		if err != nil {
			return nil, fmt.Errorf("embedding question: %w", err)
		}
		if len(vectors) != 1 || len(vectors[0]) == 0 {
			return nil, fmt.Errorf("embedding question: got %d vectors, want 1", len(vectors))
		}
		get = get.WithHybrid(gql.HybridArgumentBuilder().
			WithQuery(query).
			WithVector(vectors[0]).
			WithAlpha(hybridAlpha).
			WithFusionType(graphql.RelativeScore).
			WithProperties(searchProperties))
	}

	resp, err := get.Do(ctx)
	if err != nil {
		return nil, wrap(fmt.Sprintf("searching collection %s", s.collection), err)
	}
	var hits []hit
	if err := decodeGet(resp, s.collection, &hits); err != nil {
		return nil, fmt.Errorf("searching collection %s: %w", s.collection, err)
	}
	// Best first; Weaviate sends them so, but the order is the contract.
	slices.SortStableFunc(hits, func(a, b hit) int { return cmp.Compare(b.Additional.Score, a.Additional.Score) })
	hits = hits[:min(k, len(hits))]
	passages := make([]rag.Passage, 0, len(hits))
	for _, h := range hits {
		passages = append(passages, rag.Passage{
			ID:      h.ContentHash,
			Title:   h.Title,
			Source:  h.Source,
			Section: h.Section,
			Text:    h.Text,
			Score:   float64(h.Additional.Score),
		})
	}
	return passages, nil
}

// hit is one object of a search result.
type hit struct {
	Text        string `json:"text"`
	Title       string `json:"title"`
	Source      string `json:"source"`
	Section     string `json:"section"`
	ContentHash string `json:"contentHash"`
	Additional  struct {
		Score number `json:"score"`
	} `json:"_additional"`
}

// number decodes a JSON number, or a string holding one: Weaviate's
// GraphQL returns _additional.score as a string.
type number float64

func (n *number) UnmarshalJSON(b []byte) error {
	b = bytes.Trim(b, `"`)
	if len(b) == 0 || string(b) == "null" {
		*n = 0
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("score %s: %w", b, err)
	}
	*n = number(f)
	return nil
}

// decodeGet decodes the objects of class in the answer to a GraphQL Get
// query into out, or returns the query's errors. Weaviate answers GraphQL
// errors with status 200, so they arrive here, not as client errors.
func decodeGet(resp *models.GraphQLResponse, class string, out any) error {
	if len(resp.Errors) > 0 {
		msgs := make([]string, 0, len(resp.Errors))
		for _, e := range resp.Errors {
			if e != nil {
				msgs = append(msgs, e.Message)
			}
		}
		return fmt.Errorf("weaviate: %s", strings.Join(msgs, "; "))
	}
	get, ok := resp.Data["Get"]
	if !ok {
		return fmt.Errorf("weaviate: answer without Get")
	}
	raw, err := json.Marshal(get)
	if err != nil {
		return fmt.Errorf("weaviate: re-encoding answer: %w", err)
	}
	var byClass map[string]json.RawMessage
	if err := json.Unmarshal(raw, &byClass); err != nil {
		return fmt.Errorf("weaviate: decoding answer: %w", err)
	}
	objects, ok := byClass[class]
	if !ok || string(objects) == "null" {
		return nil // no objects
	}
	if err := json.Unmarshal(objects, out); err != nil {
		return fmt.Errorf("weaviate: decoding answer: %w", err)
	}
	return nil
}
