package budget_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/budget"
	"github.com/gravitycar/tollgate/internal/natstest"
	"github.com/gravitycar/tollgate/internal/pricing"
	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
)

// The benchmarks below measure the ledger against a real, in-process
// nats-server with file storage. Each run of a benchmark function gets a
// fresh server, so the stream and the bucket start empty and the ledger
// can be checked exactly at the end: a fast ledger that miscounts fails.
//
//	go test -run '^$' -bench FollowThroughput -benchtime 20000x ./internal/budget/
//	go test -run '^$' -bench ApplyBatch -benchtime 5000x ./internal/budget/
//	go test -run '^$' -bench EventToLedgerLatency -benchtime 500x ./internal/budget/
//
// docs/ledger-bench.md records the figures on the reference machine.

// benchEnv is a server with the USAGE stream and the budget bucket, seen
// through two connections, as in production: the alerter's, which folds
// the ledger, and a worker's, which publishes usage.
type benchEnv struct {
	js    jetstream.JetStream // the alerter's
	kv    jetstream.KeyValue  // the budget bucket, through js
	pub   jetstream.JetStream // the worker's
	pubKV jetstream.KeyValue  // the budget bucket, through pub (an api replica's view)
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	s := natstest.StartServer(b)
	connect := func(opts ...jetstream.JetStreamOpt) jetstream.JetStream {
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			b.Fatalf("connecting to nats-server: %v", err)
		}
		b.Cleanup(nc.Close) // before the server's shutdown: cleanups run last first
		js, err := jetstream.New(nc, opts...)
		if err != nil {
			b.Fatal(err)
		}
		return js
	}
	e := &benchEnv{js: connect(), pub: connect(jetstream.WithPublishAsyncMaxPending(1024))}
	ctx := b.Context()
	if err := queue.EnsureStreams(ctx, e.js, queue.Layout{}, queue.UsageStream); err != nil {
		b.Fatal(err)
	}
	kvs, err := queue.EnsureBuckets(ctx, e.js, queue.Layout{}, queue.BudgetBucket)
	if err != nil {
		b.Fatal(err)
	}
	e.kv = kvs[queue.BudgetBucket]
	if e.pubKV, err = e.pub.KeyValue(ctx, queue.BudgetBucket); err != nil {
		b.Fatal(err)
	}
	return e
}

// load is a set of distinct usage events of one day and what they must add
// up to.
type load struct {
	day    string
	events []queue.UsageEvent
	data   [][]byte // events, encoded
	spent  pricing.Nanos
}

// benchModels and benchUsers are the mix of every benchmark: 3 models,
// 100 users.
var benchModels = []string{"gpt-4o-mini", "gpt-4o", "gpt-4.1-nano"}

const benchUsers = 100

// makeLoad makes n events admitted at at (so all charged to its day), each
// with its own request id.
func makeLoad(b *testing.B, n int, at time.Time) load {
	b.Helper()
	rnd := rand.New(rand.NewPCG(uint64(n), 7))
	prices := pricing.Default()
	ld := load{day: budget.DayOf(query.NewID(at), at)}
	for range n {
		prompt := 100 + rnd.IntN(3000)
		ev := queue.UsageEvent{
			RequestID:          query.NewID(at),
			User:               fmt.Sprintf("auth0|bench-user-%03d", rnd.IntN(benchUsers)),
			Model:              benchModels[rnd.IntN(len(benchModels))],
			PromptTokens:       prompt,
			CachedPromptTokens: rnd.IntN(prompt),
			CompletionTokens:   rnd.IntN(500),
			CompletedAt:        at.Add(2 * time.Second),
		}
		cost, err := prices.Cost(ev.Model, ev.PromptTokens, ev.CachedPromptTokens, ev.CompletionTokens)
		if err != nil {
			b.Fatal(err)
		}
		data, err := json.Marshal(ev)
		if err != nil {
			b.Fatal(err)
		}
		ld.events = append(ld.events, ev)
		ld.data = append(ld.data, data)
		ld.spent += cost
	}
	return ld
}

// publishAll publishes the load asynchronously, each event with its request
// id as Nats-Msg-Id, waits for every ack and returns the last sequence.
func (e *benchEnv) publishAll(b *testing.B, ld load) uint64 {
	b.Helper()
	futures := make([]jetstream.PubAckFuture, 0, len(ld.events))
	for i, ev := range ld.events {
		f, err := e.pub.PublishAsync(queue.UsageSubject, ld.data[i],
			jetstream.WithMsgID(ev.RequestID), jetstream.WithStallWait(time.Minute))
		if err != nil {
			b.Fatalf("publishing event %d: %v", i, err)
		}
		futures = append(futures, f)
	}
	select {
	case <-e.pub.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		b.Fatalf("%d publishes still unacknowledged after 2 minutes", e.pub.PublishAsyncPending())
	}
	var last uint64
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			last = max(last, ack.Sequence)
		case err := <-f.Err():
			b.Fatalf("publishing event %d: %v", i, err)
		}
	}
	return last
}

// follower is a Ledger.Follow running in the background.
type follower struct {
	cancel  context.CancelFunc
	done    chan error
	mu      sync.Mutex
	batches int
}

// startFollow starts Follow with opts; reached is closed once a batch
// ending at sequence target or later has been applied (the cursor is
// written as the last step of Apply, so the cursor is there too).
func (e *benchEnv) startFollow(b *testing.B, opts budget.FollowOptions, target uint64) (f *follower, reached <-chan struct{}) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f = &follower{cancel: cancel, done: make(chan error, 1)}
	ch := make(chan struct{})
	var once sync.Once
	opts.Applied = func(batch []budget.Event) {
		f.mu.Lock()
		f.batches++
		f.mu.Unlock()
		if batch[len(batch)-1].Seq >= target {
			once.Do(func() { close(ch) })
		}
	}
	l := budget.NewLedger(e.kv, pricing.Default(), nil, time.Now)
	go func() { f.done <- l.Follow(ctx, e.js, opts) }()
	b.Cleanup(func() { f.stop(b) })
	return f, ch
}

// stop ends Follow and waits for it; it may be called more than once.
func (f *follower) stop(b *testing.B) {
	b.Helper()
	f.cancel()
	if err, ok := <-f.done; ok {
		close(f.done)
		if err != nil {
			b.Errorf("Follow: %v", err)
		}
	}
}

func (f *follower) batchCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.batches
}

// await waits for reached, failing after a generous deadline rather than
// hanging the benchmark.
func await(b *testing.B, reached <-chan struct{}, what string) {
	b.Helper()
	select {
	case <-reached:
	case <-time.After(10 * time.Minute):
		b.Fatalf("%s not applied after 10 minutes", what)
	}
}

// verify fails the benchmark unless the ledger holds the load exactly
// once: the day's requests and spend, the sum over users, and the cursor.
func (e *benchEnv) verify(b *testing.B, ld load, lastSeq uint64) {
	b.Helper()
	ctx := b.Context()
	l := budget.NewLedger(e.kv, pricing.Default(), nil, time.Now)
	if c, err := l.Cursor(ctx); err != nil || c != lastSeq {
		b.Fatalf("ledger cursor %d (%v), want the last sequence %d", c, err, lastSeq)
	}
	d, err := budget.ReadDay(ctx, e.kv, ld.day)
	if err != nil {
		b.Fatal(err)
	}
	if d.Totals.Requests != len(ld.events) || d.Spent != ld.spent {
		b.Fatalf("day %s: %d requests costing %v, want %d costing %v",
			ld.day, d.Totals.Requests, d.Spent, len(ld.events), ld.spent)
	}
	users, err := budget.Users(ctx, e.kv, ld.day)
	if err != nil {
		b.Fatal(err)
	}
	var requests int
	var spent pricing.Nanos
	for _, u := range users {
		requests += u.Requests
		spent += u.Spent
	}
	if requests != len(ld.events) || spent != ld.spent {
		b.Fatalf("users of %s: %d requests costing %v, want %d costing %v",
			ld.day, requests, spent, len(ld.events), ld.spent)
	}
}

// BenchmarkFollowThroughput measures how many usage events per second
// Follow folds into the ledger, exactly once, with its default options.
//
//   - backlog: b.N events are already in the stream (an alerter starting
//     after an outage); the clock runs from starting Follow until the
//     ledger's cursor reaches the last sequence.
//   - live: Follow runs while a worker publishes b.N events as fast as
//     the server acknowledges them; the clock runs from the first publish
//     until the cursor reaches the last sequence. Publisher, server and
//     ledger share the machine's cores. published/s is how fast the
//     acknowledgements came back.
func BenchmarkFollowThroughput(b *testing.B) {
	for _, mode := range []string{"backlog", "live"} {
		b.Run(mode, func(b *testing.B) {
			e := newBenchEnv(b)
			ld := makeLoad(b, b.N, time.Now())
			target := uint64(b.N) // a fresh stream: sequences 1..b.N
			var last uint64
			if mode == "backlog" {
				last = e.publishAll(b, ld)
			}
			b.ResetTimer()
			f, reached := e.startFollow(b, budget.FollowOptions{}, target)
			if mode == "live" {
				last = e.publishAll(b, ld)
				// How fast the worker could publish: the ledger keeps up
				// if events/s is close to it.
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "published/s")
			}
			await(b, reached, "events")
			b.StopTimer()
			elapsed := b.Elapsed().Seconds()
			f.stop(b)
			if last != target {
				b.Fatalf("last sequence %d, want %d", last, target)
			}
			e.verify(b, ld, last)
			b.ReportMetric(float64(b.N)/elapsed, "events/s")
			b.ReportMetric(float64(b.N)/float64(f.batchCount()), "events/batch")
		})
	}
}

// BenchmarkApplyBatch measures Ledger.Apply alone, for batches of several
// sizes, on events that are not read from the stream: the cost of folding,
// without that of fetching.
func BenchmarkApplyBatch(b *testing.B) {
	for _, size := range []int{1, 50, 500} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			e := newBenchEnv(b)
			ld := makeLoad(b, b.N, time.Now())
			events := make([]budget.Event, len(ld.events))
			for i, u := range ld.events {
				events[i] = budget.Event{Seq: uint64(i + 1), Usage: u}
			}
			l := budget.NewLedger(e.kv, pricing.Default(), nil, time.Now)
			ctx := b.Context()
			b.ResetTimer()
			for batch := range slices.Chunk(events, size) {
				if err := l.Apply(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			e.verify(b, ld, uint64(b.N))
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkEventToLedgerLatency measures, with Follow running, the time
// from publishing one usage event to its cost being in the day document,
// as an api replica's watch sees it (the Guard's view). Events are
// published one at a time, each after the previous one became visible.
func BenchmarkEventToLedgerLatency(b *testing.B) {
	e := newBenchEnv(b)
	ld := makeLoad(b, b.N, time.Now())
	f, reached := e.startFollow(b, budget.FollowOptions{}, uint64(b.N))
	ctx := b.Context()
	w, err := e.pubKV.Watch(ctx, budget.DayKey(ld.day))
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	// visible waits for the day document to hold sequence seq.
	var appliedSeq uint64
	visible := func(seq uint64) {
		timeout := time.After(time.Minute)
		for appliedSeq < seq {
			select {
			case en, ok := <-w.Updates():
				if !ok {
					b.Fatal("watch closed")
				}
				if en == nil || en.Operation() != jetstream.KeyValuePut {
					continue // end of the initial values, or a delete
				}
				var d budget.Day
				if err := json.Unmarshal(en.Value(), &d); err != nil {
					b.Fatal(err)
				}
				appliedSeq = d.AppliedSeq
			case <-timeout:
				b.Fatalf("sequence %d not in the day document after a minute (it holds %d)", seq, appliedSeq)
			}
		}
	}
	latencies := make([]time.Duration, 0, b.N)
	var last uint64
	b.ResetTimer()
	for i, ev := range ld.events {
		start := time.Now()
		ack, err := e.pub.Publish(ctx, queue.UsageSubject, ld.data[i], jetstream.WithMsgID(ev.RequestID))
		if err != nil {
			b.Fatal(err)
		}
		visible(ack.Sequence)
		latencies = append(latencies, time.Since(start))
		last = ack.Sequence
	}
	b.StopTimer()
	await(b, reached, "the last event") // its cursor write follows the day's
	f.stop(b)
	e.verify(b, ld, last)
	slices.Sort(latencies)
	ms := func(q float64) float64 {
		return float64(latencies[int(q*float64(len(latencies)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(ms(1), "max-ms")
}
