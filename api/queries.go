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
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
)

const (
	maxBodyBytes = 16 << 10
	defaultK     = 5
	maxK         = 20
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
	store    *query.Store
	js       Publisher
	now      func() time.Time
	maxChars int
	metrics  *metrics
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
	p, _ := principal(c)
	question, k, err := q.decodeSubmit(c.Request, c.Writer)
	if err != nil {
		q.refuse(c, err)
		return
	}
	now := q.now().UTC()
	id := query.NewID(now)
	decision, release, err := q.meter.admit(c.Request.Context(), id, p.Subject, question, k)
	if err != nil {
		q.metrics.submitted.WithLabelValues("refused").Inc()
		reqLogger(c).Info("query refused", "user", p.Subject, "reason", err.Error())
		q.meter.refuse(c, err)
		return
	}
	rateHeaders(c, decision.Status)
	rec, err := q.submit(c.Request.Context(), id, now, p.Subject, question, k)
	if err != nil {
		release()
		q.refuse(c, err)
		return
	}
	q.metrics.submitted.WithLabelValues("accepted").Inc()
	reqLogger(c).Info("query accepted", "query_id", rec.ID, "user", p.Subject, "k", k)
	self := "/v1/queries/" + rec.ID
	c.Header("Location", self)
	c.JSON(http.StatusAccepted, acceptedResponse{
		ID:        rec.ID,
		Status:    rec.Status,
		CreatedAt: rec.CreatedAt,
		Links:     links{Self: self, Events: self + "/events"},
	})
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

// get handles GET /v1/queries/{id}. Another user's query is 404, never 403,
// so ids cannot be probed.
func (q *queries) get(c *gin.Context) {
	p, _ := principal(c)
	rec, _, err := q.store.Get(c.Request.Context(), c.Param("id"))
	if errors.Is(err, query.ErrNotFound) || (err == nil && rec.User != p.Subject) {
		writeProblem(c, http.StatusNotFound, "not-found", "no query with this id", nil)
		return
	}
	if err != nil {
		reqLogger(c).Error("reading query", "err", err)
		c.Error(err)
		retryAfter(c, 5*time.Second)
		writeProblem(c, http.StatusServiceUnavailable, "store-unavailable", "the query store is unavailable, try again", nil)
		return
	}
	c.JSON(http.StatusOK, rec.Public())
}
