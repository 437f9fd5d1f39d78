package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
)

const (
	maxWaitSeconds = 60
	maxBodyBytes   = 16 << 10
	defaultK       = 5
	maxK           = 20
)

// submitRequest is the body of POST /v1/queries and POST /api/query.
type submitRequest struct {
	Question *string `json:"question"`
	K        *int    `json:"k"`
}

// acceptedResponse is the 202 body of a submit.
type acceptedResponse struct {
	ID        string       `json:"id"`
	Status    query.Status `json:"status"`
	CreatedAt time.Time    `json:"created_at"`
	Links     links        `json:"links"`
}

type links struct {
	Self   string `json:"self"`
	Events string `json:"events"`
}

// Publisher puts a message on a JetStream stream and waits for the ack.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// queries serves the query endpoints.
type queries struct {
	meter    *metering
	idem     *idempotency
	hub      *hub
	syncWait time.Duration
	store    *query.Store
	js       Publisher
	now      func() time.Time
	maxChars int
	metrics  *metrics

	// detached holds the long-polls and streams taken off net/http; nil
	// keeps every waiter on its request's goroutine.
	detached *detached
	// heartbeat is the interval of SSE heartbeats (heartbeatEvery).
	heartbeat time.Duration
}

// errBadRequest is a request refused before any quota is touched; it
// carries the status and what to tell the client.
type errBadRequest struct {
	status int
	kind   string
	detail string
	fields map[string]string
}

func (e *errBadRequest) Error() string { return e.detail }

// decodeSubmit reads and validates a submit body. It returns the trimmed
// question and k.
func (q *queries) decodeSubmit(r *http.Request, w http.ResponseWriter) (string, int, error) {
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "application/json" {
		return "", 0, &errBadRequest{status: http.StatusUnsupportedMediaType, kind: "unsupported-media-type",
			detail: "the body must be JSON, sent with Content-Type: application/json"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return "", 0, &errBadRequest{status: http.StatusRequestEntityTooLarge, kind: "body-too-large",
			detail: fmt.Sprintf("the body must be at most %d bytes", maxBodyBytes)}
	}
	if err != nil {
		return "", 0, &errBadRequest{status: http.StatusBadRequest, kind: "malformed-json", detail: "reading body: " + err.Error()}
	}

	var req submitRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return "", 0, jsonProblem(err)
	}
	if dec.More() {
		return "", 0, &errBadRequest{status: http.StatusBadRequest, kind: "malformed-json", detail: "the body holds more than one JSON value"}
	}

	fields := map[string]string{}
	var question string
	switch {
	case req.Question == nil:
		fields["question"] = "required"
	default:
		question = strings.TrimSpace(*req.Question)
		if n := utf8.RuneCountInString(question); n == 0 {
			fields["question"] = "must not be empty"
		} else if n > q.maxChars {
			fields["question"] = fmt.Sprintf("must be at most %d characters (got %d)", q.maxChars, n)
		}
	}
	k := defaultK
	if req.K != nil {
		k = *req.K
		if k < 1 || k > maxK {
			fields["k"] = fmt.Sprintf("must be between 1 and %d", maxK)
		}
	}
	if len(fields) > 0 {
		return "", 0, &errBadRequest{status: http.StatusBadRequest, kind: "validation", detail: "the request has invalid fields", fields: fields}
	}
	return question, k, nil
}

// jsonProblem explains a JSON decoding error in terms of the request.
func jsonProblem(err error) error {
	var (
		syntax    *json.SyntaxError
		typeError *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syntax):
		return &errBadRequest{status: http.StatusBadRequest, kind: "malformed-json",
			detail: fmt.Sprintf("malformed JSON at byte %d: %v", syntax.Offset, syntax)}
	case errors.As(err, &typeError):
		field := typeError.Field
		return &errBadRequest{status: http.StatusBadRequest, kind: "validation", detail: "the request has invalid fields",
			fields: map[string]string{field: fmt.Sprintf("must be %s, not %s", jsonKind(field), typeError.Value)}}
	case errors.Is(err, io.EOF):
		return &errBadRequest{status: http.StatusBadRequest, kind: "malformed-json", detail: "the body is empty"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &errBadRequest{status: http.StatusBadRequest, kind: "malformed-json", detail: "malformed JSON: unexpected end of body"}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &errBadRequest{status: http.StatusBadRequest, kind: "validation", detail: "the request has invalid fields",
			fields: map[string]string{field: "unknown field"}}
	}
	return &errBadRequest{status: http.StatusBadRequest, kind: "malformed-json", detail: "malformed JSON: " + err.Error()}
}

func jsonKind(field string) string {
	if field == "k" {
		return "an integer"
	}
	return "a string"
}

// submit records a validated question as queued and puts it on the queue.
// The record exists before the message, so a worker never sees a question
// without its record; if the publish fails the record is marked failed and
// nothing is half-accepted.
func (q *queries) submit(ctx context.Context, id string, now time.Time, user, question string, k int) (query.Record, error) {
	rec := query.Record{
		ID:        id,
		User:      user,
		Status:    query.Queued,
		Question:  question,
		K:         k,
		CreatedAt: now,
	}
	if err := q.store.Create(ctx, rec); err != nil {
		return query.Record{}, fmt.Errorf("recording query: %w", err)
	}
	body, err := json.Marshal(queue.Submission{ID: rec.ID, User: user, Question: question, K: k, SubmittedAt: now})
	if err != nil {
		return query.Record{}, fmt.Errorf("encoding submission: %w", err)
	}
	msg := &nats.Msg{Subject: queue.QueriesSubject, Data: body}
	if _, err := q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(rec.ID)); err != nil {
		pubErr := fmt.Errorf("queueing query %s: %w", rec.ID, err)
		// Use a fresh context: the request's may be what failed.
		markCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := q.store.Update(markCtx, rec.ID, func(r *query.Record) error {
			r.Status = query.Failed
			r.Error = &query.Error{Code: query.CodeQueueUnavailable, Message: "the question could not be queued; it was not accepted"}
			t := q.now().UTC()
			r.CompletedAt = &t
			return nil
		}); err != nil {
			return query.Record{}, errors.Join(pubErr, fmt.Errorf("marking query failed: %w", err))
		}
		return query.Record{}, pubErr
	}
	return rec, nil
}

// create handles POST /v1/queries.
func (q *queries) create(c *gin.Context) {
	rec, ok := q.accept(c)
	if !ok {
		return
	}
	q.accepted(c, rec)
}

// accepted answers 202 for a queued (or replayed) query.
func (q *queries) accepted(c *gin.Context, rec query.Record) {
	self := "/v1/queries/" + rec.ID
	c.Header("Location", self)
	c.JSON(http.StatusAccepted, acceptedResponse{
		ID:        rec.ID,
		Status:    rec.Status,
		CreatedAt: rec.CreatedAt,
		Links:     links{Self: self, Events: self + "/events"},
	})
}

// accept runs a submit up to the queue: validation, idempotency key,
// budget and rate limit, record and publish. It answers refusals itself
// and reports false; otherwise it returns the query, new or (for a repeated
// Idempotency-Key) the one the key created before.
func (q *queries) accept(c *gin.Context) (query.Record, bool) {
	p, _ := principal(c)
	ctx := c.Request.Context()
	question, k, err := q.decodeSubmit(c.Request, c.Writer)
	if err != nil {
		q.refuse(c, err)
		return query.Record{}, false
	}
	now := q.now().UTC()
	id := query.NewID(now)

	_, hasKey := c.Request.Header["Idempotency-Key"]
	key := c.GetHeader("Idempotency-Key")
	if hasKey {
		if !validIdempotencyKey(key) {
			q.refuse(c, &errBadRequest{status: http.StatusBadRequest, kind: "validation", detail: "the request has invalid fields",
				fields: map[string]string{"Idempotency-Key": "must be 1 to 255 printable ASCII characters"}})
			return query.Record{}, false
		}
		existing, err := q.idem.claim(ctx, p.Subject, key, id, question, k)
		switch {
		case errors.Is(err, errIdempotencyMismatch):
			writeProblem(c, http.StatusUnprocessableEntity, "idempotency-key-reused",
				"this Idempotency-Key was already used with a different request body", nil)
			return query.Record{}, false
		case err != nil:
			q.refuse(c, err)
			return query.Record{}, false
		case existing != "":
			return q.replay(c, existing, p.Subject)
		}
	}

	decision, release, err := q.meter.admit(ctx, id, p.Subject, question, k)
	if err != nil {
		if hasKey {
			q.idem.release(p.Subject, key)
		}
		q.metrics.submitted.WithLabelValues("refused").Inc()
		reqLogger(c).Info("query refused", "user", p.Subject, "reason", err.Error())
		q.meter.refuse(c, err)
		return query.Record{}, false
	}
	rateHeaders(c, decision.Status)
	rec, err := q.submit(ctx, id, now, p.Subject, question, k)
	if err != nil {
		release()
		if hasKey {
			q.idem.release(p.Subject, key)
		}
		q.refuse(c, err)
		return query.Record{}, false
	}
	q.metrics.submitted.WithLabelValues("accepted").Inc()
	reqLogger(c).Info("query accepted", "query_id", rec.ID, "user", p.Subject, "k", k)
	return rec, true
}

// replay returns the query an Idempotency-Key created. The first request
// may still be on its way to creating it: wait for the record a moment.
func (q *queries) replay(c *gin.Context, id, user string) (query.Record, bool) {
	w, unsubscribe := q.hub.subscribe(id)
	defer unsubscribe()
	ctx, cancel := context.WithTimeout(c.Request.Context(), 5*time.Second)
	defer cancel()
	for {
		rec, _, err := q.store.Get(ctx, id)
		if err == nil && rec.User == user {
			c.Header("Idempotent-Replayed", "true")
			return rec, true
		}
		if err != nil && !errors.Is(err, query.ErrNotFound) {
			q.refuse(c, err)
			return query.Record{}, false
		}
		select {
		case <-w.ch:
		case <-ctx.Done():
			retryAfter(c, time.Second)
			writeProblem(c, http.StatusConflict, "idempotency-key-in-flight",
				"a request with this Idempotency-Key is still being processed; retry shortly", nil)
			return query.Record{}, false
		}
	}
}

// refuse maps a submit error to its HTTP answer.
func (q *queries) refuse(c *gin.Context, err error) {
	var bad *errBadRequest
	switch {
	case errors.As(err, &bad):
		q.metrics.submitted.WithLabelValues("invalid").Inc()
		writeProblem(c, bad.status, bad.kind, bad.detail, bad.fields)
	default:
		q.metrics.submitted.WithLabelValues("unavailable").Inc()
		reqLogger(c).Error("submit failed", "err", err)
		c.Error(err)
		retryAfter(c, 5*time.Second)
		writeProblem(c, http.StatusServiceUnavailable, "queue-unavailable",
			"the question could not be queued; it was not accepted, try again", nil)
	}
}

// get handles GET /v1/queries/{id}[?wait=N]. Another user's query is
// 404, never 403, so ids cannot be probed. With wait, the request is held
// until the query is finished or N seconds pass.
func (q *queries) get(c *gin.Context) {
	wait := 0
	if v, ok := c.GetQuery("wait"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxWaitSeconds {
			writeProblem(c, http.StatusBadRequest, "validation", "the request has invalid fields",
				map[string]string{"wait": fmt.Sprintf("must be a whole number of seconds from 0 to %d", maxWaitSeconds)})
			return
		}
		wait = n
	}
	id := c.Param("id")
	w, unsubscribe := q.hub.subscribe(id)
	rec, rev, ok := q.owned(c, id)
	if !ok {
		unsubscribe()
		return
	}
	if wait > 0 && !rec.Status.Final() {
		p := &parkedPoll{rec: rec, rev: rev, unsubscribe: unsubscribe}
		if q.detached.hijack(c, http.StatusOK, jsonContent, p) {
			p.park(w, time.Duration(wait)*time.Second)
			return
		}
		ctx, cancel := context.WithTimeout(c.Request.Context(), time.Duration(wait)*time.Second)
		rec, _ = awaitFinal(ctx, w, rec, rev)
		cancel()
	}
	unsubscribe()
	c.JSON(http.StatusOK, rec.Public())
}

// jsonContent is the Content-Type of gin's c.JSON.
const jsonContent = "application/json; charset=utf-8"

// parkedPoll is a detached long-poll (see detach.go): it answers with the
// record once it is final, or as it is when the wait ends.
type parkedPoll struct {
	out         *outbox
	unsubscribe func()

	mu    sync.Mutex
	rec   query.Record
	rev   uint64
	timer *time.Timer
	done  bool
}

func (p *parkedPoll) attach(o *outbox) { p.out = o }

// park starts the wait: changes come from w, and it ends after d.
func (p *parkedPoll) park(w *waiter, d time.Duration) {
	p.mu.Lock()
	if !p.done {
		p.timer = time.AfterFunc(d, p.answer)
	}
	p.mu.Unlock()
	w.divert(p.update)
}

func (p *parkedPoll) update(u update) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || u.rev <= p.rev {
		return
	}
	p.rec, p.rev = u.rec, u.rev
	if p.rec.Status.Final() {
		p.answerLocked()
	}
}

func (p *parkedPoll) answer() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.answerLocked()
}

func (p *parkedPoll) answerLocked() {
	if p.done {
		return
	}
	p.done = true
	if p.timer != nil {
		p.timer.Stop()
	}
	body, err := json.Marshal(p.rec.Public())
	if err != nil { // a record that was read can be written
		p.out.close()
		return
	}
	p.out.send(body, true)
}

func (p *parkedPoll) shutdown() { p.answer() }

func (p *parkedPoll) ended() {
	p.mu.Lock()
	p.done = true
	if p.timer != nil {
		p.timer.Stop()
	}
	p.mu.Unlock()
	p.unsubscribe()
}

// owned reads a record for its owner, answering 404 (or 503) otherwise.
func (q *queries) owned(c *gin.Context, id string) (query.Record, uint64, bool) {
	p, _ := principal(c)
	type result struct {
		rec query.Record
		rev uint64
		err error
	}
	r := offStack(func() result {
		rec, rev, err := q.store.Get(c.Request.Context(), id)
		return result{rec, rev, err}
	})
	rec, rev, err := r.rec, r.rev, r.err
	if errors.Is(err, query.ErrNotFound) || (err == nil && rec.User != p.Subject) {
		writeProblem(c, http.StatusNotFound, "not-found", "no query with this id", nil)
		return query.Record{}, 0, false
	}
	if err != nil {
		reqLogger(c).Error("reading query", "err", err)
		c.Error(err)
		retryAfter(c, 5*time.Second)
		writeProblem(c, http.StatusServiceUnavailable, "store-unavailable", "the query store is unavailable, try again", nil)
		return query.Record{}, 0, false
	}
	return rec, rev, true
}
