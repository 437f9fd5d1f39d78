package llm

import (
	"context"
	"fmt"

	openai "github.com/sashabaranov/go-openai"
)

// Embedder returns a function that embeds texts with an OpenAI-compatible
// embeddings endpoint (OPENAI_EMBEDDING_MODEL), for hybrid search. It uses
// the same endpoint, key and retries as generation.
func (g *OpenAI) Embedder(model string) func(ctx context.Context, texts []string) ([][]float32, error) {
	return func(ctx context.Context, texts []string) ([][]float32, error) {
		req := openai.EmbeddingRequestStrings{Input: texts, Model: openai.EmbeddingModel(model)}
		var resp openai.EmbeddingResponse
		var last error // the endpoint's last transient failure
		for attempt := 0; ; attempt++ {
			box := &retryAfterBox{}
			var err error
			resp, err = g.client.CreateEmbeddings(context.WithValue(ctx, retryAfterKey{}, box), req)
			if err == nil {
				break
			}
			transient, permanent := classify(err)
			if permanent != nil || !transient || ctx.Err() != nil {
				return nil, fmt.Errorf("embedding %d texts with %s: %w", len(texts), model, after(err, last))
			}
			last = err
			box.mu.Lock()
			wait := g.backoff.delay(attempt, box.d)
			box.mu.Unlock()
			if !sleep(ctx, wait) {
				return nil, fmt.Errorf("embedding %d texts with %s: %w", len(texts), model, err)
			}
		}
		if len(resp.Data) != len(texts) {
			return nil, fmt.Errorf("embedding %d texts with %s: got %d vectors", len(texts), model, len(resp.Data))
		}
		out := make([][]float32, len(texts))
		for _, d := range resp.Data {
			if d.Index < 0 || d.Index >= len(out) {
				return nil, fmt.Errorf("embedding with %s: vector index %d out of range", model, d.Index)
			}
			out[d.Index] = d.Embedding
		}
		return out, nil
	}
}
