package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/gravitycar/tollgate/internal/query"
)

// heartbeatEvery keeps idle SSE connections open through proxies.
const heartbeatEvery = 15 * time.Second

// events handles GET /v1/queries/{id}/events: Server-Sent Events, one
// "status" event per change of status, with the full record as data and
// the record's revision as event id, until the query is finished. A client
// that reconnects with Last-Event-ID gets whatever it has not seen, the
// final event included.
func (q *queries) events(c *gin.Context) {
	id := c.Param("id")
	w, unsubscribe := q.hub.subscribe(id)
	rec, rev, ok := q.owned(c, id)
	if !ok {
		unsubscribe()
		return
	}
	lastSeen, _ := strconv.ParseUint(c.GetHeader("Last-Event-ID"), 10, 64)

	h := c.Writer.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	if !rec.Status.Final() {
		p := &parkedStream{lastSeen: lastSeen, rev: rev, every: q.heartbeatEvery(), unsubscribe: unsubscribe}
		if q.detached.hijack(c, http.StatusOK, eventStream, p) {
			p.park(w, rec)
			return
		}
	}
	defer unsubscribe()
	h.Set("Content-Type", eventStream)
	c.Status(http.StatusOK)

	var sent query.Status
	send := func(rec query.Record, rev uint64) error {
		if rev <= lastSeen || rec.Status == sent {
			return nil
		}
		// Encoding and the first write (which sends the headers) are the
		// deepest calls of a stream; keep them off the parked goroutine.
		err := offStack(func() error {
			ev, err := statusEvent(rec, rev)
			if err != nil {
				return err
			}
			if _, err := c.Writer.Write(ev); err != nil {
				return err
			}
			c.Writer.Flush()
			return nil
		})
		if err != nil {
			return err
		}
		sent, lastSeen = rec.Status, rev
		return nil
	}
	if err := send(rec, rev); err != nil || rec.Status.Final() {
		return // a client that already saw the final event gets an empty, closed stream
	}
	beat := time.NewTicker(q.heartbeatEvery())
	defer beat.Stop()
	ctx := c.Request.Context()
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			if _, err := c.Writer.Write(heartbeat); err != nil {
				return
			}
			c.Writer.Flush()
		case u := <-w.ch:
			if u.rev <= rev {
				continue
			}
			rec, rev = u.rec, u.rev
			if err := send(rec, rev); err != nil || rec.Status.Final() {
				return
			}
		}
	}
}

const eventStream = "text/event-stream"

var heartbeat = []byte(": heartbeat\n\n")

func (q *queries) heartbeatEvery() time.Duration {
	if q.heartbeat > 0 {
		return q.heartbeat
	}
	return heartbeatEvery
}

// statusEvent is the SSE event of a record at a revision.
func statusEvent(rec query.Record, rev uint64) ([]byte, error) {
	data, err := json.Marshal(rec.Public())
	if err != nil {
		return nil, fmt.Errorf("encoding the record: %w", err)
	}
	return fmt.Appendf(nil, "id: %d\nevent: status\ndata: %s\n\n", rev, data), nil
}

// parkedStream is a detached event stream (see detach.go): it writes an
// event per change of status and a heartbeat every interval, and ends
// after the final event.
type parkedStream struct {
	out         *outbox
	unsubscribe func()
	every       time.Duration

	mu       sync.Mutex
	rev      uint64 // newest revision seen
	lastSeen uint64 // newest revision sent, or the client's Last-Event-ID
	sent     query.Status
	beat     *time.Timer
	done     bool
}

func (p *parkedStream) attach(o *outbox) { p.out = o }

// park sends the head and the current record, if the client has not seen
// it, then follows w.
func (p *parkedStream) park(w *waiter, rec query.Record) {
	p.mu.Lock()
	p.out.send(nil, false) // the head, at once: the client knows it is streaming
	p.sendLocked(rec, p.rev)
	if !p.done {
		p.beat = time.AfterFunc(p.every, p.heartbeat)
	}
	p.mu.Unlock()
	w.divert(p.update)
}

func (p *parkedStream) update(u update) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || u.rev <= p.rev {
		return
	}
	p.rev = u.rev
	p.sendLocked(u.rec, u.rev)
}

func (p *parkedStream) sendLocked(rec query.Record, rev uint64) {
	if p.done || rev <= p.lastSeen || rec.Status == p.sent {
		return
	}
	ev, err := statusEvent(rec, rev)
	if err != nil { // a record that was read can be written
		p.endLocked()
		return
	}
	final := rec.Status.Final()
	p.out.send(ev, final)
	p.sent, p.lastSeen = rec.Status, rev
	if final {
		p.done = true
		p.stopLocked()
	}
}

func (p *parkedStream) heartbeat() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	p.out.send(heartbeat, false)
	p.beat.Reset(p.every)
}

func (p *parkedStream) stopLocked() {
	if p.beat != nil {
		p.beat.Stop()
	}
}

func (p *parkedStream) endLocked() {
	if !p.done {
		p.done = true
		p.stopLocked()
		p.out.close()
	}
}

// shutdown closes the stream; the client resumes elsewhere with
// Last-Event-ID.
func (p *parkedStream) shutdown() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLocked()
}

func (p *parkedStream) ended() {
	p.mu.Lock()
	p.done = true
	p.stopLocked()
	p.mu.Unlock()
	p.unsubscribe()
}

// syncResponse is the answer of the original synchronous endpoint.
type syncResponse struct {
	Answer    string         `json:"answer"`
	Sources   []query.Source `json:"sources"`
	Usage     *query.Usage   `json:"usage"`
	RequestID string         `json:"request_id"`
}

// syncAccepted is its 202, when the answer takes longer than SYNC_WAIT_SECONDS.
type syncAccepted struct {
	acceptedResponse
	RequestID string `json:"request_id"`
}

// sync handles POST /api/query, kept from the original service for
// existing frontends: the same admission as POST /v1/queries, then it waits
// up to SYNC_WAIT_SECONDS for the answer.
func (q *queries) sync(c *gin.Context) {
	rec, ok := q.accept(c)
	if !ok {
		return
	}
	w, unsubscribe := q.hub.subscribe(rec.ID)
	defer unsubscribe()
	cur, rev, err := q.store.Get(c.Request.Context(), rec.ID)
	if err == nil {
		ctx, cancel := context.WithTimeout(c.Request.Context(), q.syncWait)
		cur, _ = awaitFinal(ctx, w, cur, rev)
		cancel()
		rec = cur
	}
	switch rec.Status {
	case query.Succeeded:
		c.JSON(http.StatusOK, syncResponse{Answer: rec.Answer, Sources: rec.Sources, Usage: rec.Usage, RequestID: rec.ID})
	case query.Failed:
		detail := "the question could not be answered"
		if rec.Error != nil {
			detail += ": " + rec.Error.Message + " (" + rec.Error.Code + ")"
		}
		c.Header("X-Query-Id", rec.ID)
		writeProblem(c, http.StatusBadGateway, "query-failed", detail, nil)
	default:
		self := "/v1/queries/" + rec.ID
		c.Header("Location", self)
		c.JSON(http.StatusAccepted, syncAccepted{
			acceptedResponse: acceptedResponse{ID: rec.ID, Status: rec.Status, CreatedAt: rec.CreatedAt, Links: links{Self: self, Events: self + "/events"}},
			RequestID:        rec.ID,
		})
	}
}
