// Package query holds query records, the state of one question from
// submission to answer, and their store in the JetStream key-value bucket
// "queries".
package query

import (
	"crypto/rand"
	"time"

	"github.com/oklog/ulid/v2"
)

// Status is where a query is in its life: Queued → Running → Succeeded | Failed.
type Status string

// The statuses of a query.
const (
	Queued    Status = "queued"
	Running   Status = "running"
	Succeeded Status = "succeeded"
	Failed    Status = "failed"
)

// Final reports whether the query will not change any more.
func (s Status) Final() bool { return s == Succeeded || s == Failed }

// Error codes a failed query may carry.
const (
	CodeQueueUnavailable = "queue_unavailable" // the question could not be queued
	CodeRetrieval        = "retrieval_failed"
	CodeGeneration       = "generation_failed"
	CodeMaxDeliveries    = "max_deliveries" // every allowed attempt failed
	CodeInternal         = "internal"
)

// Record is a query as stored and as shown to its owner.
type Record struct {
	ID          string     `json:"id"`
	User        string     `json:"user,omitempty"` // the owner; stored, never shown
	Status      Status     `json:"status"`
	Question    string     `json:"question"`
	K           int        `json:"k"`
	Answer      string     `json:"answer,omitempty"`
	Sources     []Source   `json:"sources,omitempty"`
	Usage       *Usage     `json:"usage,omitempty"`
	Error       *Error     `json:"error,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
}

// Source is a passage an answer was drawn from.
type Source struct {
	ID      string  `json:"id"`
	Title   string  `json:"title"`
	Source  string  `json:"source"`
	Snippet string  `json:"snippet"`
	Score   float64 `json:"score"`
}

// Usage is what answering the query really consumed.
type Usage struct {
	Model              string  `json:"model"`
	PromptTokens       int     `json:"prompt_tokens"`
	CachedPromptTokens int     `json:"cached_prompt_tokens"`
	CompletionTokens   int     `json:"completion_tokens"`
	CostUSD            float64 `json:"cost_usd"`
	Cached             bool    `json:"cached"`
	// Simulated is set when the offline generator answered: its tokens are
	// priced as PricedAs (OPENAI_MODEL) so budgets can be tried without a key.
	Simulated bool   `json:"simulated,omitempty"`
	PricedAs  string `json:"priced_as,omitempty"`
}

// Billed is the model the usage is charged as.
func (u *Usage) Billed() string {
	if u.PricedAs != "" {
		return u.PricedAs
	}
	return u.Model
}

// Error says why a query failed.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// NewID returns a new query id: a ULID, sortable by creation time, with 80
// bits from crypto/rand so ids cannot be guessed.
func NewID(now time.Time) string {
	return ulid.MustNew(ulid.Timestamp(now), rand.Reader).String()
}

// Public returns the record as its owner sees it.
func (r Record) Public() Record {
	r.User = ""
	return r
}
