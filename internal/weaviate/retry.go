package weaviate

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// backoff says how a retryTransport waits between attempts.
type backoff struct {
	attempts int           // attempts in all, the first included
	base     time.Duration // wait before the first retry, doubled for each further retry
	max      time.Duration // longest wait, also the cap on a Retry-After the server asks for
}

// defaultBackoff retries five times, over about three seconds at most
// (plus what Retry-After asks for): enough to ride out a rolling restart or
// a brief overload, short enough for a worker to give the message back.
var defaultBackoff = backoff{attempts: 6, base: 100 * time.Millisecond, max: 5 * time.Second}

// retryTransport retries requests that Weaviate answers with 429 Too Many
// Requests or a 5xx status (other than 501 Not Implemented), waiting with
// exponential backoff and jitter, or as long as a Retry-After header asks
// (up to backoff.max). It never waits past the request context's
// deadline: when the next wait would end after it, the last response is
// returned as it is. Other responses and transport errors are returned at
// once.
//
// Every request the client sends is safe to repeat: queries only read,
// batch imports write objects under deterministic IDs, and a collection
// created twice fails the second time with 422, which [Store] handles.
type retryTransport struct {
	next    http.RoundTripper
	backoff backoff
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	for attempt := 1; ; attempt++ {
		if attempt > 1 && req.Body != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req = req.Clone(ctx)
			req.Body = body
		}
		resp, err := t.next.RoundTrip(req)
		if err != nil || !retryable(resp.StatusCode) || attempt >= t.backoff.attempts {
			return resp, err
		}
		if req.Body != nil && req.GetBody == nil {
			return resp, nil // the body cannot be sent again (the client's bodies always can)
		}
		wait := t.backoff.wait(attempt, resp.Header.Get("Retry-After"))
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return resp, nil // no time left for another attempt: report this answer
		}
		// The body is not needed: drain a little so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// retryable reports whether a response with this status is worth retrying.
func retryable(status int) bool {
	return status == http.StatusTooManyRequests ||
		(status >= 500 && status <= 599 && status != http.StatusNotImplemented)
}

// wait returns how long to wait after the given (1-based) failed attempt:
// what Retry-After asks (in seconds, capped at max) if it is set, or else
// base·2^(attempt-1), capped at max, with "equal jitter": a random
// duration between half of that and all of it, so that workers that failed
// together do not retry together.
func (b backoff) wait(attempt int, retryAfter string) time.Duration {
	if s, err := strconv.Atoi(retryAfter); err == nil && s >= 0 {
		return min(time.Duration(s)*time.Second, b.max)
	}
	d := b.base << min(attempt-1, 30)
	if d <= 0 || d > b.max {
		d = b.max
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// sleep waits for d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
