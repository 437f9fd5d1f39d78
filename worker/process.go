package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/llm"
	"github.com/gravitycar/tollgate/internal/pricing"
	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
	"github.com/gravitycar/tollgate/internal/rag"
)

// Retriever finds the passages a question is answered from.
type Retriever interface {
	Search(ctx context.Context, question string, k int) ([]rag.Passage, error)
}

// Generator answers a question from passages and reports the tokens used.
type Generator interface {
	Generate(ctx context.Context, question string, passages []rag.Passage) (llm.Answer, error)
}

// Publisher publishes a message to a stream and waits for its ack.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// processor answers one queued question at a time; the consumer loop runs
// many of them at once.
type processor struct {
	store      *query.Store
	pub        Publisher
	retriever  Retriever
	generator  Generator
	now        func() time.Time
	logger     *slog.Logger
	metrics    *metrics
	ackWait    time.Duration
	maxDeliver int
	prices     *pricing.Table
	model      string        // OPENAI_MODEL: what usage without a priced model is billed as
	timeout    time.Duration // longest one attempt may take (WORKER_ANSWER_TIMEOUT)
	cache      answerCache
}

// failure is an attempt that failed for good: the query is failed with its
// code, and any tokens it used are still charged.
type failure struct {
	code    string
	message string
	usage   *query.Usage
}

func (f *failure) Error() string { return f.code + ": " + f.message }

// handle processes one message and settles it: Ack when the query is
// finished (succeeded or failed for good), Nak when it should be tried
// again, Term when the message is unusable.
func (p *processor) handle(ctx context.Context, msg jetstream.Msg) {
	var sub queue.Submission
	if err := json.Unmarshal(msg.Data(), &sub); err != nil || sub.ID == "" {
		p.logger.Error("terminating undecodable message", "err", err, "data", truncate(string(msg.Data()), 200))
		p.settle(msg.Term())
		p.metrics.processed.WithLabelValues("poison").Inc()
		return
	}
	logger := p.logger.With("query_id", sub.ID, "user", sub.User)
	attempt := 1
	if md, err := msg.Metadata(); err == nil {
		attempt = int(md.NumDelivered)
	}

	rec, _, err := p.store.Get(ctx, sub.ID)
	switch {
	case errors.Is(err, query.ErrNotFound) && attempt < p.maxDeliver:
		// The api writes the record before it publishes, but a replica
		// that serves the read may not have it yet (R3): try again later.
		logger.Warn("query record not found yet, will retry", "attempt", attempt)
		p.settle(msg.NakWithDelay(backoff(attempt)))
		return
	case errors.Is(err, query.ErrNotFound):
		logger.Error("terminating message for a query with no record", "attempts", attempt)
		p.settle(msg.Term())
		p.metrics.processed.WithLabelValues("poison").Inc()
		return
	case err != nil:
		logger.Warn("reading query record, will retry", "err", err)
		p.settle(msg.NakWithDelay(backoff(attempt)))
		return
	case rec.Status.Final():
		// A redelivery of a finished query: an earlier attempt stored the
		// result but may have died before publishing usage or acking.
		if err := p.publishUsage(ctx, rec); err != nil {
			logger.Warn("republishing usage, will retry", "err", err)
			p.settle(msg.NakWithDelay(backoff(attempt)))
			return
		}
		p.settle(msg.DoubleAck(ctx))
		return
	}

	stop := p.heartbeat(msg)
	actx, cancel := context.WithTimeout(ctx, p.timeout)
	rec, err = p.answer(actx, logger, sub)
	cancel()
	stop()
	var failed *failure
	switch {
	case errors.As(err, &failed):
		logger.Error("query failed", "code", failed.code, "err", failed.message)
		rec, err = p.fail(ctx, sub.ID, failed.code, failed.message, failed.usage)
		if err != nil {
			logger.Error("marking query failed", "err", err)
			p.settle(msg.NakWithDelay(backoff(attempt)))
			return
		}
	case ctx.Err() != nil:
		// Shutting down: hand the question back at once for another worker.
		logger.Info("handing query back: shutting down")
		p.settle(msg.Nak())
		return
	case err != nil && attempt < p.maxDeliver:
		logger.Warn("answering failed, will retry", "attempt", attempt, "err", err)
		p.settle(msg.NakWithDelay(backoff(attempt)))
		p.metrics.processed.WithLabelValues("retried").Inc()
		return
	case err != nil:
		logger.Error("answering failed on the last attempt", "attempt", attempt, "err", err)
		rec, err = p.fail(ctx, sub.ID, query.CodeMaxDeliveries,
			fmt.Sprintf("gave up after %d attempts: %v", attempt, err), nil)
		if err != nil {
			logger.Error("marking query failed", "err", err)
			p.settle(msg.NakWithDelay(backoff(attempt)))
			return
		}
	}
	if err := p.publishUsage(ctx, rec); err != nil {
		logger.Warn("publishing usage, will retry", "err", err)
		p.settle(msg.NakWithDelay(backoff(attempt)))
		return
	}
	p.settle(msg.DoubleAck(ctx))
	p.metrics.processed.WithLabelValues(string(rec.Status)).Inc()
	logger.Info("query finished", "status", rec.Status, "attempt", attempt)
}

// answer runs one attempt: mark running, retrieve, generate, store the
// result. It returns the finished record.
func (p *processor) answer(ctx context.Context, logger *slog.Logger, sub queue.Submission) (query.Record, error) {
	start := p.now().UTC()
	if _, err := p.store.Update(ctx, sub.ID, func(r *query.Record) error {
		r.Status = query.Running
		if r.StartedAt == nil {
			r.StartedAt = &start
		}
		return nil
	}); err != nil {
		return query.Record{}, fmt.Errorf("marking running: %w", err)
	}

	key := cacheKey(sub.Question, sub.K, p.model)
	if hit, ok := p.cache.get(ctx, key); ok {
		p.metrics.processed.WithLabelValues("cached").Inc()
		return p.succeed(ctx, sub.ID, hit.Answer, hit.Sources, &query.Usage{Model: hit.Model, Cached: true})
	}

	passages, err := p.retriever.Search(ctx, sub.Question, sub.K)
	if err != nil {
		return query.Record{}, fmt.Errorf("retrieving passages: %w", err)
	}
	ans, err := p.generator.Generate(ctx, sub.Question, passages)
	var usage *query.Usage
	if ans.Usage.PromptTokens+ans.Usage.CompletionTokens > 0 {
		p.metrics.tokens.WithLabelValues(ans.Usage.Model, "prompt").Add(float64(ans.Usage.PromptTokens))
		p.metrics.tokens.WithLabelValues(ans.Usage.Model, "completion").Add(float64(ans.Usage.CompletionTokens))
		usage = p.price(logger, ans.Usage)
	}
	var refused *llm.PermanentError
	switch {
	case errors.As(err, &refused):
		return query.Record{}, &failure{code: refused.Code, message: err.Error(), usage: usage}
	case errors.Is(err, llm.ErrNoChoices):
		// Billed, but nothing to show: retrying would bill again.
		return query.Record{}, &failure{code: query.CodeGeneration, message: "the model returned no answer", usage: usage}
	case err != nil:
		return query.Record{}, fmt.Errorf("generating answer: %w", err)
	}

	sources := make([]query.Source, len(passages))
	for i, ps := range passages {
		sources[i] = query.Source{ID: ps.ID, Title: ps.Title, Source: ps.Source, Snippet: snippet(ps.Text, 300), Score: ps.Score}
	}
	if err := p.cache.put(ctx, key, cachedAnswer{Answer: ans.Text, Sources: sources, Model: ans.Usage.Model}); err != nil {
		logger.Warn("caching the answer", "err", err)
	}
	return p.succeed(ctx, sub.ID, ans.Text, sources, usage)
}

// succeed stores a query's answer.
func (p *processor) succeed(ctx context.Context, id, answer string, sources []query.Source, usage *query.Usage) (query.Record, error) {
	return p.store.Update(ctx, id, func(r *query.Record) error {
		done := p.now().UTC()
		r.Status = query.Succeeded
		r.Answer = answer
		r.Sources = sources
		r.Usage = usage
		r.Error = nil
		r.CompletedAt = &done
		return nil
	})
}

// price turns the generator's usage into the record's. The offline
// generator's tokens are priced as the configured model and marked
// simulated; a model with no price is charged at the dearest known price
// and reported loudly, never billed as free.
func (p *processor) price(logger *slog.Logger, u llm.Usage) *query.Usage {
	out := &query.Usage{
		Model:              u.Model,
		PromptTokens:       u.PromptTokens,
		CachedPromptTokens: u.CachedPromptTokens,
		CompletionTokens:   u.CompletionTokens,
	}
	if u.Model == llm.OfflineModel {
		out.Simulated, out.PricedAs = true, p.model
	}
	cost, known, err := p.prices.Charge(out.Billed(), u.PromptTokens, u.CachedPromptTokens, u.CompletionTokens)
	switch {
	case err != nil:
		logger.Error("pricing usage failed; the ledger will price it", "model", out.Billed(), "err", err)
	case !known:
		logger.Error("model has no price: charged at the dearest known price; add it to PRICING_FILE", "model", out.Billed(), "cost", cost.String())
	}
	out.CostUSD = cost.USD()
	return out
}

// fail marks a query failed for good, keeping the usage of any tokens the
// failed attempt consumed so that they are charged.
func (p *processor) fail(ctx context.Context, id, code, message string, usage *query.Usage) (query.Record, error) {
	return p.store.Update(ctx, id, func(r *query.Record) error {
		done := p.now().UTC()
		r.Status = query.Failed
		r.Error = &query.Error{Code: code, Message: message}
		if usage != nil {
			r.Usage = usage
		}
		r.CompletedAt = &done
		return nil
	})
}

// publishUsage publishes the usage event of a finished query, with the
// query id as Nats-Msg-Id so a republish is dropped as a duplicate. A query
// that failed without using tokens gets a zero event, which settles its
// budget reservation at $0.
func (p *processor) publishUsage(ctx context.Context, rec query.Record) error {
	completed := p.now().UTC()
	if rec.CompletedAt != nil {
		completed = *rec.CompletedAt
	}
	ev := queue.UsageEvent{RequestID: rec.ID, User: rec.User, Model: p.model, CompletedAt: completed}
	if u := rec.Usage; u != nil {
		ev.Model, ev.Simulated = u.Billed(), u.Simulated
		ev.PromptTokens, ev.CachedPromptTokens, ev.CompletionTokens = u.PromptTokens, u.CachedPromptTokens, u.CompletionTokens
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encoding usage event: %w", err)
	}
	_, err = p.pub.PublishMsg(ctx, &nats.Msg{Subject: queue.UsageSubject, Data: body}, jetstream.WithMsgID(rec.ID))
	if err != nil {
		return fmt.Errorf("publishing usage event: %w", err)
	}
	return nil
}

// heartbeat tells JetStream the message is still being worked on, every
// third of AckWait, until the returned stop is called.
func (p *processor) heartbeat(msg jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(p.ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := msg.InProgress(); err != nil {
					p.logger.Warn("heartbeat failed", "err", err)
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (p *processor) settle(err error) {
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		p.logger.Warn("settling message", "err", err)
	}
}

// backoff is the redelivery delay after a failed attempt: 1s, 2s, 4s, ...
// capped at 30s.
func backoff(attempt int) time.Duration {
	d := time.Second << min(attempt-1, 5)
	return min(d, 30*time.Second)
}

// snippet is the start of text, cut at a word boundary.
func snippet(text string, maxRunes int) string {
	text = strings.Join(strings.Fields(text), " ")
	if utf8.RuneCountInString(text) <= maxRunes {
		return text
	}
	cut := []rune(text)[:maxRunes]
	s := string(cut)
	if i := strings.LastIndexByte(s, ' '); i > maxRunes/2 {
		s = s[:i]
	}
	return s + "…"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
