package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
)

// hub fans query record changes out to the requests waiting on them. One
// KV watch per api process serves every long-poll, SSE stream and
// synchronous request, however many there are: a waiter costs a map entry
// and a one-slot channel, not a watcher.
type hub struct {
	logger *slog.Logger

	mu      sync.Mutex
	waiters map[string]map[*waiter]struct{}
	ready   chan struct{}
	watches int // watches started, for tests and metrics
}

// waiter receives the latest revision of one record. Updates coalesce: a
// slow reader sees the newest state, never a backlog. A detached waiter
// (see detach.go) has no goroutine reading ch: its updates are diverted
// to a function instead.
type waiter struct {
	mu sync.Mutex
	ch chan update
	fn func(update) // set by divert; called on the hub's goroutine, must not block
}

// put hands u to the waiter.
func (w *waiter) put(u update) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fn != nil {
		w.fn(u)
		return
	}
	select { // replace an unread older update with this one
	case <-w.ch:
	default:
	}
	w.ch <- u // cannot block: only put sends, under w.mu, and ch is empty
}

// divert sends the waiter's updates to fn from now on, beginning with one
// that arrived and was not read.
func (w *waiter) divert(fn func(update)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fn = fn
	select {
	case u := <-w.ch:
		fn(u)
	default:
	}
}

type update struct {
	rec query.Record
	rev uint64
}

func newHub(logger *slog.Logger) *hub {
	return &hub{logger: logger, waiters: map[string]map[*waiter]struct{}{}, ready: make(chan struct{})}
}

// run follows the queries bucket until ctx ends, re-watching after errors.
func (h *hub) run(ctx context.Context, kv jetstream.KeyValue) error {
	var once sync.Once
	return queue.KeepWatching(ctx, h.logger, "query", func(ctx context.Context) error {
		return h.watch(ctx, kv, func() { once.Do(func() { close(h.ready) }) })
	})
}

func (h *hub) watch(ctx context.Context, kv jetstream.KeyValue, started func()) error {
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return err
	}
	defer w.Stop()
	h.mu.Lock()
	h.watches++
	h.mu.Unlock()
	started()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher closed")
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			h.deliver(e)
		}
	}
}

func (h *hub) deliver(e jetstream.KeyValueEntry) {
	h.mu.Lock()
	ws := h.waiters[e.Key()]
	if len(ws) == 0 {
		h.mu.Unlock()
		return
	}
	targets := make([]*waiter, 0, len(ws))
	for w := range ws {
		targets = append(targets, w)
	}
	h.mu.Unlock()
	rec, err := query.Decode(e.Value())
	if err != nil {
		h.logger.Error("undecodable query record", "key", e.Key(), "err", err)
		return
	}
	u := update{rec: rec, rev: e.Revision()}
	for _, w := range targets {
		w.put(u)
	}
}

// subscribe starts delivering changes of record id. Call it before reading
// the record, so no change between the read and the wait is missed.
func (h *hub) subscribe(id string) (*waiter, func()) {
	w := &waiter{ch: make(chan update, 1)}
	h.mu.Lock()
	if h.waiters[id] == nil {
		h.waiters[id] = map[*waiter]struct{}{}
	}
	h.waiters[id][w] = struct{}{}
	h.mu.Unlock()
	return w, func() {
		h.mu.Lock()
		delete(h.waiters[id], w)
		if len(h.waiters[id]) == 0 {
			delete(h.waiters, id)
		}
		h.mu.Unlock()
	}
}

// counts reports the waiters and the watches started, for tests.
func (h *hub) counts() (waiters, watches int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ws := range h.waiters {
		waiters += len(ws)
	}
	return waiters, h.watches
}

// awaitFinal waits until the record is final or ctx ends, and returns the
// newest state seen. cur is the state read after subscribing.
func awaitFinal(ctx context.Context, w *waiter, cur query.Record, rev uint64) (query.Record, uint64) {
	for !cur.Status.Final() {
		select {
		case <-ctx.Done():
			return cur, rev
		case u := <-w.ch:
			if u.rev > rev {
				cur, rev = u.rec, u.rev
			}
		}
	}
	return cur, rev
}

// offStack runs f on a short-lived goroutine and returns its result. The
// requests that wait (long-polls, SSE, the synchronous endpoint) park
// their connection's goroutine for up to a minute, and Go keeps a
// goroutine's stack at the deepest size it reached: doing the deep work
// (NATS round trips, JSON) elsewhere keeps each parked goroutine small.
func offStack[T any](f func() T) T {
	ch := make(chan T, 1)
	go func() { ch <- f() }()
	return <-ch
}
