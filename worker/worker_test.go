package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/gravitycar/tollgate/internal/llm"
	"github.com/gravitycar/tollgate/internal/natstest"
	"github.com/gravitycar/tollgate/internal/pricing"
	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
	"github.com/gravitycar/tollgate/internal/rag"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// bleve starts package-level goroutines on import.
		goleak.IgnoreAnyFunction("github.com/blevesearch/bleve_index_api.AnalysisWorker"),
		goleak.IgnoreTopFunction("github.com/blevesearch/bleve/v2/index/scorch.(*Scorch).mergerLoop"),
		goleak.IgnoreCurrent(),
	)
}

// rig is a worker's world: a real nats-server with the streams and
// buckets, an index over the sample corpus, and a model endpoint.
type rig struct {
	conn  *nats.Conn
	js    jetstream.JetStream
	store *query.Store
	index *rag.Index
	cons  jetstream.Consumer
}

func newRig(t testing.TB, ackWait time.Duration, maxDeliver int) *rig {
	t.Helper()
	ctx := t.Context()
	nc := natstest.Start(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	layout := queue.Layout{}
	if err := queue.EnsureStreams(ctx, js, layout, queue.QueriesStream, queue.UsageStream); err != nil {
		t.Fatal(err)
	}
	kvs, err := queue.EnsureBuckets(ctx, js, layout, queue.QueriesBucket, queue.ChunksBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rag.Ingest(ctx, kvs[queue.ChunksBucket], filepath.Join("..", "samples", "corpus"), nil); err != nil {
		t.Fatal(err)
	}
	index, err := rag.NewIndex(nil)
	if err != nil {
		t.Fatal(err)
	}
	ictx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); index.Run(ictx, kvs[queue.ChunksBucket]) }()
	t.Cleanup(func() { cancel(); <-done; index.Close() })
	select {
	case <-index.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("index not ready")
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, queue.QueriesStream, jetstream.ConsumerConfig{
		Durable: queue.WorkersConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait, MaxDeliver: maxDeliver,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &rig{conn: nc, js: js, store: query.NewStore(kvs[queue.QueriesBucket]), index: index, cons: cons}
}

func (r *rig) processor(gen Generator, ackWait time.Duration, maxDeliver int) *processor {
	return &processor{
		store: r.store, pub: r.js, retriever: r.index, generator: gen, now: time.Now,
		logger: slog.New(slog.DiscardHandler), metrics: newMetrics(), ackWait: ackWait, maxDeliver: maxDeliver,
		prices: pricing.Default(), model: "gpt-4o-mini", timeout: time.Minute,
	}
}

// submit does what the api does: record, then publish.
func (r *rig) submit(t testing.TB, question string) string {
	t.Helper()
	now := time.Now().UTC()
	id := query.NewID(now)
	if err := r.store.Create(t.Context(), query.Record{ID: id, User: "alice", Status: query.Queued, Question: question, K: 3, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	r.publish(t, id, queue.Submission{ID: id, User: "alice", Question: question, K: 3, SubmittedAt: now})
	return id
}

func (r *rig) publish(t testing.TB, id string, sub any) {
	t.Helper()
	var data []byte
	switch v := sub.(type) {
	case []byte:
		data = v
	default:
		data, _ = json.Marshal(v)
	}
	if _, err := r.js.PublishMsg(t.Context(), &nats.Msg{Subject: queue.QueriesSubject, Data: data}, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
}

// run consumes until the returned stop is called.
func (r *rig) run(t testing.TB, p *processor, concurrency int, grace time.Duration) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- consume(ctx, r.cons, p, concurrency, grace, p.logger) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("consume: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (r *rig) waitStatus(t testing.TB, id string, want query.Status) query.Record {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec, _, err := r.store.Get(t.Context(), id)
		if err == nil && rec.Status == want {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("query %s is %s (err %v), want %s", id, rec.Status, err, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *rig) usageEvents(t testing.TB) []queue.UsageEvent {
	t.Helper()
	s, err := r.js.Stream(t.Context(), queue.UsageStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []queue.UsageEvent
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		var ev queue.UsageEvent
		json.Unmarshal(m.Data, &ev)
		out = append(out, ev)
	}
	return out
}

func (r *rig) pending(t testing.TB) uint64 {
	t.Helper()
	s, _ := r.js.Stream(t.Context(), queue.QueriesStream)
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func offline(t testing.TB) *llm.Offline {
	t.Helper()
	g, err := llm.NewOffline()
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// model is an OpenAI-compatible endpoint whose answers the test scripts.
type model struct {
	srv   *httptest.Server
	calls atomic.Int64
}

func newModel(t testing.TB, reply func(n int64, w http.ResponseWriter, r *http.Request)) *model {
	t.Helper()
	m := &model{}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reply(m.calls.Add(1), w, r)
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *model) generator() *llm.OpenAI {
	return llm.NewOpenAI(llm.OpenAIConfig{APIKey: "test", BaseURL: m.srv.URL + "/v1", Model: "gpt-4o-mini", MaxTokens: 64})
}

func completion(w http.ResponseWriter, text string, prompt, completionTokens int) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":"c1","object":"chat.completion","model":"gpt-4o-mini-2024-07-18",
		"choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],
		"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,"prompt_tokens_details":{"cached_tokens":100}}}`,
		text, prompt, completionTokens, prompt+completionTokens)
}

func TestAnswersWithModelUsage(t *testing.T) {
	r := newRig(t, 5*time.Second, 3)
	m := newModel(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { completion(w, "Thirty a day [1].", 812, 7) })
	r.run(t, r.processor(m.generator(), 5*time.Second, 3), 2, time.Second)

	id := r.submit(t, "How many requests can I make per day?")
	rec := r.waitStatus(t, id, query.Succeeded)
	if rec.Answer != "Thirty a day [1]." || len(rec.Sources) == 0 {
		t.Fatalf("record %+v", rec)
	}
	cost, _ := pricing.Default().Cost("gpt-4o-mini", 812, 100, 7)
	want := query.Usage{Model: "gpt-4o-mini-2024-07-18", PromptTokens: 812, CachedPromptTokens: 100, CompletionTokens: 7, CostUSD: cost.USD()}
	if *rec.Usage != want {
		t.Fatalf("usage %+v, want %+v (copied from the response)", *rec.Usage, want)
	}
	waitFor(t, func() bool { return len(r.usageEvents(t)) == 1 })
	ev := r.usageEvents(t)[0]
	if ev.RequestID != id || ev.PromptTokens != 812 || ev.CachedPromptTokens != 100 || ev.CompletionTokens != 7 || ev.User != "alice" {
		t.Fatalf("usage event %+v", ev)
	}
	waitFor(t, func() bool { return r.pending(t) == 0 })
}

func TestPoisonMessagesAreTerminated(t *testing.T) {
	r := newRig(t, 5*time.Second, 3)
	r.run(t, r.processor(offline(t), 5*time.Second, 3), 2, time.Second)

	r.publish(t, "garbage", []byte("{not json"))
	r.publish(t, "orphan", queue.Submission{ID: query.NewID(time.Now()), User: "x", Question: "no record", K: 1})
	id := r.submit(t, "What happens at 80% of the budget?")

	r.waitStatus(t, id, query.Succeeded) // the queue is not blocked by the poison
	waitFor(t, func() bool { return r.pending(t) == 0 })
	if n := len(r.usageEvents(t)); n != 1 {
		t.Fatalf("%d usage events, want 1", n)
	}
}

func TestRedeliveredFinishedQueryIsNotAnsweredTwice(t *testing.T) {
	r := newRig(t, 5*time.Second, 3)
	m := newModel(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { completion(w, "again", 1, 1) })

	// An earlier attempt stored the answer, then died before publishing
	// usage and acking.
	now := time.Now().UTC()
	id := query.NewID(now)
	rec := query.Record{ID: id, User: "alice", Status: query.Succeeded, Question: "q", K: 1, Answer: "first",
		Usage: &query.Usage{Model: "gpt-4o-mini", PromptTokens: 50, CompletionTokens: 5}, CreatedAt: now, CompletedAt: &now}
	if err := r.store.Create(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	r.publish(t, id, queue.Submission{ID: id, User: "alice", Question: "q", K: 1})
	r.run(t, r.processor(m.generator(), 5*time.Second, 3), 1, time.Second)

	waitFor(t, func() bool { return r.pending(t) == 0 })
	evs := r.usageEvents(t)
	if len(evs) != 1 || evs[0].RequestID != id || evs[0].PromptTokens != 50 {
		t.Fatalf("usage events %+v, want the stored usage once", evs)
	}
	if m.calls.Load() != 0 {
		t.Fatalf("the model was called %d times for a finished query", m.calls.Load())
	}
	if got, _, _ := r.store.Get(t.Context(), id); got.Answer != "first" {
		t.Fatalf("answer overwritten: %q", got.Answer)
	}
}

func TestFailsAfterMaxDeliveries(t *testing.T) {
	const maxDeliver = 2
	r := newRig(t, 5*time.Second, maxDeliver)
	m := newModel(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":{"message":"boom","type":"server_error"}}`, http.StatusInternalServerError)
	})
	p := r.processor(m.generator(), 5*time.Second, maxDeliver)
	p.timeout = time.Second // each attempt retries the 500s for a second, then gives the message back
	r.run(t, p, 1, time.Second)

	id := r.submit(t, "How many requests can I make per day?")
	rec := r.waitStatus(t, id, query.Failed)
	if rec.Error == nil || rec.Error.Code != query.CodeMaxDeliveries || rec.CompletedAt == nil {
		t.Fatalf("record %+v", rec)
	}
	if got := m.calls.Load(); got < 2*maxDeliver {
		t.Fatalf("model called %d times, want retries within each of the %d attempts", got, maxDeliver)
	}
	waitFor(t, func() bool { return r.pending(t) == 0 })
	evs := r.usageEvents(t)
	if len(evs) != 1 || evs[0].RequestID != id || evs[0].PromptTokens+evs[0].CompletionTokens != 0 {
		t.Fatalf("usage events %+v, want one zero event that settles the reservation", evs)
	}
}

func TestShutdownHandsInFlightWorkBack(t *testing.T) {
	r := newRig(t, 5*time.Second, 5)
	release := make(chan struct{})
	m := newModel(t, func(n int64, w http.ResponseWriter, req *http.Request) {
		if n == 1 { // the first worker's call hangs until it gives up
			select {
			case <-release:
			case <-req.Context().Done():
				return
			}
		}
		completion(w, "done", 10, 2)
	})
	first := r.run(t, r.processor(m.generator(), 5*time.Second, 5), 1, 50*time.Millisecond)
	id := r.submit(t, "q")
	r.waitStatus(t, id, query.Running)
	waitFor(t, func() bool { return m.calls.Load() == 1 })

	first() // SIGTERM: grace runs out mid-call, the question is handed back
	close(release)
	if got, _, _ := r.store.Get(t.Context(), id); got.Status.Final() {
		t.Fatalf("stopped worker finished the query: %s", got.Status)
	}

	r.run(t, r.processor(m.generator(), 5*time.Second, 5), 1, time.Second) // another worker
	rec := r.waitStatus(t, id, query.Succeeded)
	if rec.Answer != "done" {
		t.Fatalf("answer %q", rec.Answer)
	}
	waitFor(t, func() bool { return r.pending(t) == 0 })
	if evs := r.usageEvents(t); len(evs) != 1 {
		t.Fatalf("%d usage events, want exactly 1", len(evs))
	}
}

func TestSlowModelIsNotRedelivered(t *testing.T) {
	// The call takes three AckWaits; heartbeats keep the message ours.
	const ackWait = time.Second
	r := newRig(t, ackWait, 5)
	m := newModel(t, func(_ int64, w http.ResponseWriter, req *http.Request) {
		select {
		case <-time.After(3 * ackWait):
		case <-req.Context().Done():
			return
		}
		completion(w, "slow but sure", 10, 3)
	})
	r.run(t, r.processor(m.generator(), ackWait, 5), 4, time.Second)
	id := r.submit(t, "q")
	r.waitStatus(t, id, query.Succeeded)
	if got := m.calls.Load(); got != 1 {
		t.Fatalf("model called %d times: the message was redelivered while in progress", got)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPermanentModelErrorFailsFastAndChargesUsedTokens(t *testing.T) {
	r := newRig(t, 5*time.Second, 5)
	m := newModel(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		fmt.Fprint(w, `{"error":{"message":"This model's maximum context length is 128000 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}`)
	})
	r.run(t, r.processor(m.generator(), 5*time.Second, 5), 1, time.Second)
	id := r.submit(t, "q")
	rec := r.waitStatus(t, id, query.Failed)
	if rec.Error == nil || rec.Error.Code != "context_too_long" {
		t.Fatalf("error %+v, want context_too_long", rec.Error)
	}
	if m.calls.Load() != 1 {
		t.Fatalf("model called %d times for a permanent error", m.calls.Load())
	}
	waitFor(t, func() bool { return len(r.usageEvents(t)) == 1 })

	// A billed response with no answer fails the query and charges it.
	billed := newModel(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":300,"completion_tokens":0}}`)
	})
	r2 := newRig(t, 5*time.Second, 5)
	r2.run(t, r2.processor(billed.generator(), 5*time.Second, 5), 1, time.Second)
	id = r2.submit(t, "q")
	rec = r2.waitStatus(t, id, query.Failed)
	if rec.Usage == nil || rec.Usage.PromptTokens != 300 {
		t.Fatalf("usage %+v, want the 300 billed tokens kept", rec.Usage)
	}
	waitFor(t, func() bool { evs := r2.usageEvents(t); return len(evs) == 1 && evs[0].PromptTokens == 300 })
}

func TestAnswerCache(t *testing.T) {
	r := newRig(t, 5*time.Second, 3)
	kv, err := r.js.CreateOrUpdateKeyValue(t.Context(), answersBucket(time.Hour, 1))
	if err != nil {
		t.Fatal(err)
	}
	m := newModel(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { completion(w, "Thirty [1].", 500, 5) })
	p := r.processor(m.generator(), 5*time.Second, 3)
	p.cache = answerCache{kv: kv}
	r.run(t, p, 1, time.Second)

	first := r.waitStatus(t, r.submit(t, "How many requests per day?"), query.Succeeded)
	again := r.waitStatus(t, r.submit(t, "  how MANY requests   per day? "), query.Succeeded)
	if m.calls.Load() != 1 {
		t.Fatalf("model called %d times for a repeated question", m.calls.Load())
	}
	if again.Answer != first.Answer || len(again.Sources) != len(first.Sources) || again.Usage == nil || !again.Usage.Cached ||
		again.Usage.PromptTokens != 0 || again.Usage.CostUSD != 0 {
		t.Fatalf("cached answer %+v usage %+v", again.Answer, again.Usage)
	}
	waitFor(t, func() bool { return len(r.usageEvents(t)) == 2 })
	if ev := r.usageEvents(t)[1]; ev.PromptTokens+ev.CompletionTokens != 0 {
		t.Fatalf("cached answer's usage event %+v, want zero tokens ($0)", ev)
	}
}

func TestAbandonedQuestionIsFailedNotStuck(t *testing.T) {
	// A worker takes the question and dies without a word, on its only
	// allowed delivery: the advisory lets another worker settle it.
	r := newRig(t, time.Second, 1)
	stream, _ := r.js.Stream(t.Context(), queue.QueriesStream)
	p := r.processor(offline(t), time.Second, 1)
	sub, err := settleAbandoned(t.Context(), r.conn, stream, p, p.logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })

	id := r.submit(t, "q")
	batch, err := r.cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	taken := 0
	for range batch.Messages() { // taken, never acked
		taken++
	}
	if taken != 1 {
		t.Fatalf("fetched %d questions, want 1", taken)
	}

	rec := r.waitStatus(t, id, query.Failed)
	if rec.Error == nil || rec.Error.Code != query.CodeMaxDeliveries {
		t.Fatalf("record %+v", rec)
	}
	waitFor(t, func() bool { return r.pending(t) == 0 && len(r.usageEvents(t)) == 1 })
}
