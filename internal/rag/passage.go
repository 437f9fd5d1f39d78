// Package rag retrieves the passages a question is answered from: it splits
// documents into chunks, keeps them in a JetStream key-value bucket, and
// searches them with an embedded BM25 index that follows the bucket.
package rag

// Passage is one retrieved chunk with its relevance score. Higher scores
// are better; scores are only comparable within one search.
type Passage struct {
	ID      string  `json:"id"`      // the chunk's content hash
	Title   string  `json:"title"`   // the document's title (first heading or file name)
	Source  string  `json:"source"`  // path of the document, relative to the ingested folder
	Section string  `json:"section"` // the heading the chunk sits under, if any
	Text    string  `json:"text"`    // the chunk's full text
	Score   float64 `json:"score"`
}
