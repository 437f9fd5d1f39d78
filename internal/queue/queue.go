// Package queue is Tollgate's JetStream plumbing: how a process reaches NATS
// (an existing server or an embedded one), the streams and key-value buckets
// the binaries share, and the messages that travel on them.
package queue

import (
	"context"
	"log/slog"
	"time"
)

// Subjects and names fixed by the contract (DESIGN.md, "Streams, buckets and events").
const (
	QueriesStream     = "QUERIES"
	QueriesSubject    = "tollgate.queries.submitted"
	UsageStream       = "USAGE"
	UsageSubject      = "tollgate.usage.completed"
	QueriesBucket     = "queries"
	RateLimitBucket   = "ratelimit"
	BudgetBucket      = "budget"
	AlertsBucket      = "alerts"
	ChunksBucket      = "chunks"
	IdempotencyBucket = "idempotency"
	WorkersConsumer   = "workers"
	AlerterConsumer   = "alerter"
)

// Submission is the message on QueriesSubject: one accepted question.
// Its Nats-Msg-Id header is the query id.
type Submission struct {
	ID          string    `json:"id"`
	User        string    `json:"user"`
	Question    string    `json:"question"`
	K           int       `json:"k"`
	SubmittedAt time.Time `json:"submitted_at"`
}

// UsageEvent is the message on UsageSubject: the tokens one query really
// used. Its Nats-Msg-Id header is the request id, so a query is counted once.
// Every finished query has one, a failed one with zero tokens, so that the
// ledger settles its budget reservation.
type UsageEvent struct {
	RequestID          string    `json:"request_id"`
	User               string    `json:"user"`
	Model              string    `json:"model"`
	PromptTokens       int       `json:"prompt_tokens"`
	CachedPromptTokens int       `json:"cached_prompt_tokens"`
	CompletionTokens   int       `json:"completion_tokens"`
	CompletedAt        time.Time `json:"completed_at"`
	Simulated          bool      `json:"simulated,omitempty"` // offline generator, priced as the configured model
}

// KeepWatching runs watch until ctx ends, starting it again a second after
// it returns early: a KV watch ends when the connection is lost for long,
// and the process must pick the stream up again rather than go stale.
func KeepWatching(ctx context.Context, logger *slog.Logger, what string, watch func(context.Context) error) error {
	for {
		err := watch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		logger.Warn(what+" watch ended; restarting", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}
