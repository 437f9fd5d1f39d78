package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/gravitycar/tollgate/internal/config"
	"github.com/gravitycar/tollgate/internal/llm"
	"github.com/gravitycar/tollgate/internal/logging"
	"github.com/gravitycar/tollgate/internal/ops"
	"github.com/gravitycar/tollgate/internal/pricing"
	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
	"github.com/gravitycar/tollgate/internal/rag"
	"github.com/gravitycar/tollgate/internal/weaviate"
)

// drainGrace is how long in-flight questions may run after a shutdown
// signal before they are handed back to the queue. Kubernetes' default
// terminationGracePeriodSeconds (30) leaves room for it.
const drainGrace = 20 * time.Second

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	getenv, err := config.WithDotEnv(".env", getenv)
	if err != nil {
		return err
	}
	s, err := loadSettings(getenv)
	if err != nil {
		return err
	}
	logger, err := logging.New(stdout, s.LogLevel, s.LogFormat)
	if err != nil {
		return err
	}
	cmd := "serve"
	if len(args) > 1 {
		cmd = args[1]
	}
	switch cmd {
	case "serve":
		return serve(ctx, s, logger)
	case "ingest":
		if len(args) != 3 {
			return errors.New("usage: worker ingest PATH")
		}
		return ingest(ctx, s, logger, args[2], stdout)
	}
	return fmt.Errorf("unknown command %q (commands: ingest)", cmd)
}

func connect(ctx context.Context, s settings, logger *slog.Logger) (*queue.Conn, queue.Layout, error) {
	conn, err := queue.Connect(ctx, queue.ConnectOptions{
		Name: "tollgate-worker", URL: s.NATSURL, Creds: s.NATSCreds, DataDir: s.DataDir, Logger: logger,
	})
	return conn, queue.Layout{Replicas: s.Replicas, QueryTTL: s.QueryTTL}, err
}

// ingest loads documents into the active index: Weaviate when WEAVIATE_URL
// is set, otherwise the chunks bucket, which every running worker's
// embedded index follows.
func ingest(ctx context.Context, s settings, logger *slog.Logger, path string, stdout io.Writer) error {
	var sink rag.Sink
	if s.WeaviateURL != "" {
		store, err := openWeaviate(ctx, s)
		if err != nil {
			return err
		}
		sink = store
		fmt.Fprintf(stdout, "ingesting into Weaviate %s, collection %s\n", s.WeaviateURL, store.Collection())
	} else {
		conn, layout, err := connect(ctx, s, logger)
		if err != nil {
			return err
		}
		defer conn.Close()
		kvs, err := queue.EnsureBuckets(ctx, conn.JS, layout, queue.ChunksBucket)
		if err != nil {
			return err
		}
		sink = rag.KVSink{KV: kvs[queue.ChunksBucket]}
	}
	rep, err := rag.IngestInto(ctx, sink, path, stdout)
	if err != nil {
		return fmt.Errorf("ingesting %s: %w", path, err)
	}
	for _, e := range rep.Errors {
		fmt.Fprintln(stdout, "skipped:", e)
	}
	_, err = fmt.Fprintf(stdout, "ingested %s: %d files, %d chunks (%d new, %d already there), %d files failed, %.1fs\n",
		path, rep.Files, rep.Chunks, rep.Added(), rep.Skipped, rep.Failed, rep.Duration.Seconds())
	return err
}

func serve(ctx context.Context, s settings, logger *slog.Logger) error {
	conn, layout, err := connect(ctx, s, logger)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := queue.EnsureStreams(ctx, conn.JS, layout, queue.QueriesStream, queue.UsageStream); err != nil {
		return err
	}
	kvs, err := queue.EnsureBuckets(ctx, conn.JS, layout, queue.QueriesBucket, queue.ChunksBucket)
	if err != nil {
		return err
	}
	cons, err := conn.JS.CreateOrUpdateConsumer(ctx, queue.QueriesStream, jetstream.ConsumerConfig{
		Durable:       queue.WorkersConsumer,
		Description:   "RAG workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.AckWait,
		MaxDeliver:    s.MaxDeliver,
		MaxAckPending: 10_000,
	})
	if err != nil {
		return fmt.Errorf("creating consumer %s: %w", queue.WorkersConsumer, err)
	}

	gen, err := newGenerator(s, logger)
	if err != nil {
		return err
	}
	var (
		retriever  Retriever
		index      *rag.Index // the embedded index, when Weaviate is not used
		searchable func() error
	)
	if s.WeaviateURL != "" {
		store, err := openWeaviate(ctx, s)
		if err != nil {
			return err
		}
		logger.Info("retrieval: weaviate", "url", s.WeaviateURL, "collection", store.Collection(), "hybrid", s.EmbeddingModel != "")
		retriever = store
		searchable = func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return store.Ready(ctx)
		}
	} else {
		if index, err = rag.NewIndex(logger); err != nil {
			return err
		}
		defer index.Close()
		retriever = index
		searchable = func() error {
			select {
			case <-index.Ready():
				return nil
			default:
				return errors.New("index is loading")
			}
		}
	}
	prices, err := loadPrices(s)
	if err != nil {
		return err
	}

	m := newMetrics()
	p := &processor{
		store:      query.NewStore(kvs[queue.QueriesBucket]),
		pub:        conn.JS,
		retriever:  retriever,
		generator:  gen,
		now:        time.Now,
		logger:     logger,
		metrics:    m,
		ackWait:    s.AckWait,
		maxDeliver: s.MaxDeliver,
		prices:     prices,
		model:      s.OpenAIModel,
		timeout:    s.AnswerTimeout,
	}
	if s.AnswerCacheTTL > 0 {
		kv, err := conn.JS.CreateOrUpdateKeyValue(ctx, answersBucket(s.AnswerCacheTTL, s.Replicas))
		if err != nil {
			return fmt.Errorf("creating the answer cache: %w", err)
		}
		p.cache = answerCache{kv: kv}
	}
	ready := func() error {
		if !conn.NC.IsConnected() {
			return errors.New("nats is not connected")
		}
		return searchable()
	}

	g, gctx := errgroup.WithContext(ctx)
	if index != nil {
		g.Go(func() error { return index.Run(gctx, kvs[queue.ChunksBucket]) })
	}
	stream, err := conn.JS.Stream(ctx, queue.QueriesStream)
	if err != nil {
		return fmt.Errorf("opening %s: %w", queue.QueriesStream, err)
	}
	abandoned, err := settleAbandoned(gctx, conn.NC, stream, p, logger)
	if err != nil {
		return err
	}
	defer abandoned.Unsubscribe()
	g.Go(func() error { return ops.Serve(gctx, s.MetricsAddr, m.registry, ready, logger) })
	g.Go(func() error {
		for searchable() != nil {
			select {
			case <-gctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
		}
		passages := -1
		if index != nil {
			passages = index.Len()
		}
		logger.Info("worker ready", "passages", passages, "concurrency", s.Concurrency, "generator", fmt.Sprintf("%T", gen))
		return consume(gctx, cons, p, s.Concurrency, drainGrace, logger)
	})
	return g.Wait()
}

// consume runs up to concurrency questions at once until ctx ends, then
// stops fetching, lets in-flight questions finish for grace, and hands
// back to the queue whatever is left.
func consume(ctx context.Context, cons jetstream.Consumer, p *processor, concurrency int, grace time.Duration, logger *slog.Logger) error {
	iter, err := cons.Messages(jetstream.PullMaxMessages(concurrency))
	if err != nil {
		return fmt.Errorf("consuming %s: %w", queue.WorkersConsumer, err)
	}
	// Work outlives ctx by drainGrace, so a shutdown does not throw away
	// answers that are nearly done.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopped := context.AfterFunc(ctx, func() {
		iter.Drain()
		time.AfterFunc(grace, cancelWork)
	})
	defer stopped()

	slots := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for {
		slots <- struct{}{}
		msg, err := iter.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			break
		}
		if err != nil {
			<-slots
			logger.Warn("fetching questions", "err", err)
			continue
		}
		if ctx.Err() != nil {
			// Delivered after the shutdown began: not started, handed back.
			p.settle(msg.Nak())
			<-slots
			continue
		}
		wg.Go(func() {
			defer func() { <-slots }()
			p.handle(work, msg)
		})
	}
	logger.Info("stopped fetching; waiting for in-flight questions")
	wg.Wait()
	return nil
}

// loadPrices loads the price table and checks that the configured model is
// in it: an unpriced model is an error at start-up, not a free request.
func loadPrices(s settings) (*pricing.Table, error) {
	prices, err := pricing.Load(s.PricingFile)
	if err != nil {
		return nil, fmt.Errorf("PRICING_FILE: %w", err)
	}
	if _, err := prices.Price(s.OpenAIModel); err != nil {
		return nil, fmt.Errorf("config: OPENAI_MODEL=%q has no price; add it to PRICING_FILE (%w)", s.OpenAIModel, err)
	}
	return prices, nil
}

// openWeaviate connects to Weaviate, with hybrid search when an embedding
// model is configured.
func openWeaviate(ctx context.Context, s settings) (*weaviate.Store, error) {
	cfg := weaviate.Config{URL: s.WeaviateURL, APIKey: s.WeaviateAPIKey, Collection: s.WeaviateCollection}
	if s.EmbeddingModel != "" {
		cfg.Embed = llm.NewOpenAI(llm.OpenAIConfig{APIKey: s.OpenAIKey, BaseURL: s.OpenAIBaseURL}).Embedder(s.EmbeddingModel)
	}
	store, err := weaviate.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("WEAVIATE_URL=%s: %w", s.WeaviateURL, err)
	}
	return store, nil
}

// newGenerator picks the OpenAI-compatible generator when a key is set, and
// the offline extractive one otherwise.
func newGenerator(s settings, logger *slog.Logger) (Generator, error) {
	if s.OpenAIKey != "" {
		logger.Info("generator: openai-compatible", "base_url", s.OpenAIBaseURL, "model", s.OpenAIModel)
		return llm.NewOpenAI(llm.OpenAIConfig{
			APIKey: s.OpenAIKey, BaseURL: s.OpenAIBaseURL, Model: s.OpenAIModel, MaxTokens: s.OpenAIMaxTokens,
		}), nil
	}
	logger.Info("generator: offline extractive (no OPENAI_API_KEY)")
	g, err := llm.NewOffline()
	if err != nil {
		return nil, fmt.Errorf("offline generator: %w", err)
	}
	return g, nil
}

// metrics are the worker's Prometheus series.
type metrics struct {
	registry  *prometheus.Registry
	processed *prometheus.CounterVec
	tokens    *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		registry: ops.NewRegistry(),
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_worker_queries_total",
			Help: "Questions processed, by outcome (succeeded, failed, retried, poison).",
		}, []string{"outcome"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_worker_tokens_total",
			Help: "Tokens used, by model and kind (prompt, completion).",
		}, []string{"model", "kind"}),
	}
	m.registry.MustRegister(m.processed, m.tokens)
	return m
}
