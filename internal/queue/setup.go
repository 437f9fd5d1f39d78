package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Layout is the configurable part of the streams and buckets: replicas (R1
// in dev, R3 in production) and retention times.
type Layout struct {
	Replicas     int           // 1 when zero
	QueryTTL     time.Duration // how long query records and queued questions live; 24h when zero
	UsageMaxAge  time.Duration // 35 days when zero
	DupeWindow   time.Duration // duplicate-publish window of both streams; 2m when zero
	RateLimitTTL time.Duration // 48h when zero
}

func (l Layout) withDefaults() Layout {
	if l.Replicas == 0 {
		l.Replicas = 1
	}
	if l.QueryTTL == 0 {
		l.QueryTTL = 24 * time.Hour
	}
	if l.UsageMaxAge == 0 {
		l.UsageMaxAge = 35 * 24 * time.Hour
	}
	if l.DupeWindow == 0 {
		l.DupeWindow = 2 * time.Minute
	}
	if l.RateLimitTTL == 0 {
		l.RateLimitTTL = 48 * time.Hour
	}
	return l
}

// QueriesStreamConfig is the work queue of accepted questions.
func (l Layout) QueriesStreamConfig() jetstream.StreamConfig {
	l = l.withDefaults()
	return jetstream.StreamConfig{
		Name:        QueriesStream,
		Description: "Accepted questions waiting for a worker",
		Subjects:    []string{QueriesSubject},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    l.Replicas,
		MaxAge:      l.QueryTTL,
		Duplicates:  l.DupeWindow,
	}
}

// UsageStreamConfig is the log of real token usage, one event per query.
func (l Layout) UsageStreamConfig() jetstream.StreamConfig {
	l = l.withDefaults()
	return jetstream.StreamConfig{
		Name:        UsageStream,
		Description: "Token usage of completed queries",
		Subjects:    []string{UsageSubject},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    l.Replicas,
		MaxAge:      l.UsageMaxAge,
		Duplicates:  l.DupeWindow,
	}
}

// BucketConfig returns the settings of one of the named key-value buckets.
func (l Layout) BucketConfig(name string) jetstream.KeyValueConfig {
	l = l.withDefaults()
	cfg := jetstream.KeyValueConfig{
		Bucket:   name,
		Storage:  jetstream.FileStorage,
		Replicas: l.Replicas,
	}
	switch name {
	case QueriesBucket:
		cfg.Description = "Query records by id"
		cfg.TTL = l.QueryTTL
	case RateLimitBucket:
		cfg.Description = "Token bucket state per user"
		cfg.TTL = l.RateLimitTTL
	case BudgetBucket:
		cfg.Description = "Spending ledger"
		cfg.LimitMarkerTTL = time.Hour // enables per-key TTLs, for the ledger's request-id bindings
	case AlertsBucket:
		cfg.Description = "Budget alerts per day and threshold"
	case IdempotencyBucket:
		cfg.Description = "Idempotency keys of submits, per user, for 24 hours"
		cfg.TTL = 24 * time.Hour
	case ChunksBucket:
		cfg.Description = "Document chunks for the embedded index, by content hash"
	}
	return cfg
}

// EnsureStreams creates or updates the named streams (QueriesStream,
// UsageStream). It is idempotent and safe to run from every replica.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, l Layout, names ...string) error {
	for _, name := range names {
		var cfg jetstream.StreamConfig
		switch name {
		case QueriesStream:
			cfg = l.QueriesStreamConfig()
		case UsageStream:
			cfg = l.UsageStreamConfig()
		default:
			return fmt.Errorf("unknown stream %q", name)
		}
		if err := patiently(ctx, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateStream(ctx, cfg)
			return err
		}); err != nil {
			return fmt.Errorf("creating stream %s: %w", name, err)
		}
	}
	return nil
}

// EnsureBuckets creates or updates the named key-value buckets and returns
// them by name.
func EnsureBuckets(ctx context.Context, js jetstream.JetStream, l Layout, names ...string) (map[string]jetstream.KeyValue, error) {
	out := make(map[string]jetstream.KeyValue, len(names))
	for _, name := range names {
		var kv jetstream.KeyValue
		err := patiently(ctx, func(ctx context.Context) (err error) {
			kv, err = js.CreateOrUpdateKeyValue(ctx, l.BucketConfig(name))
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("creating bucket %s: %w", name, err)
		}
		out[name] = kv
	}
	return out, nil
}

// setupPatience is how long stream and bucket creation is retried: a
// cluster that has just formed may not have elected its meta leader yet.
const setupPatience = time.Minute

// patiently retries f while it times out or finds no JetStream to answer,
// for up to setupPatience; other errors (a bad configuration) return at once.
func patiently(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, setupPatience)
	defer cancel()
	delay := 250 * time.Millisecond
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, 10*time.Second)
		err := f(attempt)
		cancelAttempt()
		transient := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders) ||
			errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, nats.ErrTimeout)
		if err == nil || !transient || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}
