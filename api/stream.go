package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
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
	defer unsubscribe()
	rec, rev, ok := q.owned(c, id)
	if !ok {
		return
	}
	lastSeen, _ := strconv.ParseUint(c.GetHeader("Last-Event-ID"), 10, 64)

	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	c.Status(http.StatusOK)

	var sent query.Status
	send := func(rec query.Record, rev uint64) error {
		if rev <= lastSeen || rec.Status == sent {
			return nil
		}
		// Encoding and the first write (which sends the headers) are the
		// deepest calls of a stream; keep them off the parked goroutine.
		err := offStack(func() error {
			data, err := json.Marshal(rec.Public())
			if err != nil {
				return fmt.Errorf("encoding the record: %w", err)
			}
			if _, err := fmt.Fprintf(c.Writer, "id: %d\nevent: status\ndata: %s\n\n", rev, data); err != nil {
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
	beat := time.NewTicker(heartbeatEvery)
	defer beat.Stop()
	ctx := c.Request.Context()
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			if _, err := fmt.Fprint(c.Writer, ": heartbeat\n\n"); err != nil {
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
