package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
)

// maxDeliveriesSubject is where JetStream announces a message of QUERIES
// that the workers consumer will not deliver again.
const maxDeliveriesSubject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + queue.QueriesStream + "." + queue.WorkersConsumer

// maxDeliveriesAdvisory is the part of the advisory we use.
type maxDeliveriesAdvisory struct {
	StreamSeq uint64 `json:"stream_seq"`
}

// settleAbandoned ends questions whose every delivery was lost (workers
// that crashed mid-answer, the last time too): without it they would stay
// "running" until they expire. One worker of the group handles each
// advisory: it fails the query with max_deliveries, publishes its zero
// usage event (which releases the budget reservation) and removes the
// message from the queue.
//
// The subscription is in place (flushed to the server) when it returns;
// ctx bounds the handling of each advisory.
func settleAbandoned(ctx context.Context, nc *nats.Conn, stream jetstream.Stream, p *processor, logger *slog.Logger) (*nats.Subscription, error) {
	sub, err := nc.QueueSubscribe(maxDeliveriesSubject, queue.WorkersConsumer, func(m *nats.Msg) {
		var adv maxDeliveriesAdvisory
		if err := json.Unmarshal(m.Data, &adv); err != nil || adv.StreamSeq == 0 {
			logger.Error("undecodable max-deliveries advisory", "err", err)
			return
		}
		if err := p.abandon(ctx, stream, adv.StreamSeq); err != nil {
			logger.Error("settling an abandoned question", "stream_seq", adv.StreamSeq, "err", err)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribing to max-deliveries advisories: %w", err)
	}
	if err := nc.Flush(); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("subscribing to max-deliveries advisories: %w", err)
	}
	return sub, nil
}

func (p *processor) abandon(ctx context.Context, stream jetstream.Stream, seq uint64) error {
	raw, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // settled meanwhile
	}
	if err != nil {
		return fmt.Errorf("reading question %d: %w", seq, err)
	}
	var sub queue.Submission
	if err := json.Unmarshal(raw.Data, &sub); err == nil && sub.ID != "" {
		_, err := p.store.Update(ctx, sub.ID, func(r *query.Record) error {
			if r.Status.Final() {
				return errAlreadyFinal
			}
			done := p.now().UTC()
			r.Status = query.Failed
			r.Error = &query.Error{Code: query.CodeMaxDeliveries, Message: "every attempt to answer was lost (workers stopped mid-answer)"}
			r.CompletedAt = &done
			return nil
		})
		switch {
		case errors.Is(err, errAlreadyFinal), errors.Is(err, query.ErrNotFound):
		case err != nil:
			return err
		default:
			p.logger.Warn("question abandoned after its last delivery: failed", "query_id", sub.ID)
			p.metrics.processed.WithLabelValues(string(query.Failed)).Inc()
		}
		if err == nil || errors.Is(err, errAlreadyFinal) {
			if rec, _, gerr := p.store.Get(ctx, sub.ID); gerr == nil {
				if err := p.publishUsage(ctx, rec); err != nil {
					return err
				}
			}
		}
	}
	if err := stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("removing question %d: %w", seq, err)
	}
	return nil
}

var errAlreadyFinal = errors.New("query already finished")
