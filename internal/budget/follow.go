package budget

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/queue"
)

// FollowOptions tunes Follow.
type FollowOptions struct {
	MaxBatch int           // events per Apply; 500 when zero
	MaxWait  time.Duration // how long a partial batch waits for more; 50ms when zero
	// Applied, if set, is called after each batch with its events.
	Applied func(batch []Event)
}

// Follow folds the USAGE stream into the ledger until ctx ends: it reads
// the stream in order from the ledger's cursor with an ordered consumer
// and applies batches. Any number of processes may follow at once; the
// ledger stays exact (see Ledger).
//
// The position lives in the ledger itself rather than in a durable
// consumer's ack floor: a ledger spread over several keys can only be
// exactly once if events reach it in stream order, and two processes
// sharing one durable consumer would each see a different, interleaved
// part of the stream.
func (l *Ledger) Follow(ctx context.Context, js jetstream.JetStream, opts FollowOptions) error {
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 500
	}
	if opts.MaxWait == 0 {
		opts.MaxWait = 50 * time.Millisecond
	}
	cursor, err := l.Cursor(ctx)
	if err != nil {
		return err
	}
	cons, err := js.OrderedConsumer(ctx, queue.UsageStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{queue.UsageSubject},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    cursor + 1,
	})
	if err != nil {
		return fmt.Errorf("following %s: %w", queue.UsageStream, err)
	}
	for ctx.Err() == nil {
		batch, err := cons.FetchNoWait(opts.MaxBatch)
		if err != nil {
			return fmt.Errorf("fetching usage: %w", err)
		}
		events := make([]Event, 0, opts.MaxBatch)
		for msg := range batch.Messages() {
			if ev, ok := l.decode(msg); ok {
				events = append(events, ev)
			}
		}
		if err := batch.Error(); err != nil && ctx.Err() == nil {
			l.logger.Warn("fetching usage", "err", err)
		}
		if len(events) == 0 {
			// Nothing new: wait for the next event, briefly.
			wait, err := cons.Fetch(1, jetstream.FetchMaxWait(opts.MaxWait*20))
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("fetching usage: %w", err)
			}
			for msg := range wait.Messages() {
				if ev, ok := l.decode(msg); ok {
					events = append(events, ev)
				}
			}
			if len(events) == 0 {
				continue
			}
		}
		if err := l.applyRetrying(ctx, events); err != nil {
			return err
		}
		if opts.Applied != nil {
			opts.Applied(events)
		}
	}
	return nil
}

// applyRetrying applies a batch until it succeeds: skipping it would break
// the stream order the ledger relies on.
func (l *Ledger) applyRetrying(ctx context.Context, events []Event) error {
	delay := 100 * time.Millisecond
	for {
		err := l.Apply(ctx, events)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		l.logger.Error("applying usage to the ledger; retrying", "err", err, "first_seq", events[0].Seq, "events", len(events))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// decode reads a usage event. Undecodable events are logged and skipped:
// they carry nothing that could be charged.
func (l *Ledger) decode(msg jetstream.Msg) (Event, bool) {
	md, err := msg.Metadata()
	if err != nil {
		l.logger.Error("usage message without metadata", "err", err)
		return Event{}, false
	}
	var u queue.UsageEvent
	if err := json.Unmarshal(msg.Data(), &u); err != nil || u.RequestID == "" {
		l.logger.Error("undecodable usage event skipped", "seq", md.Sequence.Stream, "err", err)
		return Event{}, false
	}
	return Event{Seq: md.Sequence.Stream, Usage: u}, true
}
