package llm

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// ErrPermanent marks a failure that retrying cannot fix: the request was
// refused (400, 401, 403, 404, 422), for example because the prompt is
// longer than the model's context. Errors wrapping it carry a Code.
var ErrPermanent = errors.New("model refused the request")

// PermanentError is a refusal by the model endpoint, with a short code for
// the query record.
type PermanentError struct {
	Code   string // context_too_long, model_unauthorized, model_rejected
	Status int
	Err    error
}

func (e *PermanentError) Error() string { return e.Code + ": " + e.Err.Error() }
func (e *PermanentError) Unwrap() []error {
	return []error{ErrPermanent, e.Err}
}

// Backoff tunes the retries of transient model failures.
type Backoff struct {
	Initial time.Duration // first delay; 500ms when zero
	Max     time.Duration // longest delay; 20s when zero
}

func (b Backoff) delay(attempt int, retryAfter time.Duration) time.Duration {
	initial, ceiling := b.Initial, b.Max
	if initial == 0 {
		initial = 500 * time.Millisecond
	}
	if ceiling == 0 {
		ceiling = 20 * time.Second
	}
	d := min(initial<<min(attempt, 20), ceiling)
	d = d/2 + rand.N(d/2+1) // jitter: half fixed, half random
	return max(d, retryAfter)
}

// classify sorts a chat completion error: transient (retry), permanent
// (fail the query), or neither (context ended: stop).
func classify(err error) (transient bool, permanent *PermanentError) {
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	status := 0
	code := ""
	switch {
	case errors.As(err, &apiErr):
		status = apiErr.HTTPStatusCode
		if c, ok := apiErr.Code.(string); ok {
			code = c
		}
	case errors.As(err, &reqErr):
		status = reqErr.HTTPStatusCode
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false, nil
	default:
		return true, nil // network trouble: connection refused, reset, EOF
	}
	switch {
	case status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500:
		return true, nil
	case code == "context_length_exceeded":
		return false, &PermanentError{Code: "context_too_long", Status: status, Err: err}
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return false, &PermanentError{Code: "model_unauthorized", Status: status, Err: err}
	default:
		return false, &PermanentError{Code: "model_rejected", Status: status, Err: err}
	}
}

// retryAfterKey carries, per request, the Retry-After the endpoint sent.
type retryAfterKey struct{}

type retryAfterBox struct {
	mu sync.Mutex
	d  time.Duration
}

// retryAfterTransport records Retry-After (seconds or an HTTP date) of 429
// and 5xx responses into the request's box, since go-openai's errors do
// not carry headers.
type retryAfterTransport struct {
	next http.RoundTripper
}

func (t retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.next.RoundTrip(req)
	if err != nil || (res.StatusCode != http.StatusTooManyRequests && res.StatusCode < 500) {
		return res, err
	}
	box, _ := req.Context().Value(retryAfterKey{}).(*retryAfterBox)
	if box == nil {
		return res, nil
	}
	var d time.Duration
	if v := res.Header.Get("Retry-After"); v != "" {
		if s, err := strconv.Atoi(v); err == nil {
			d = time.Duration(s) * time.Second
		} else if at, err := http.ParseTime(v); err == nil {
			d = time.Until(at)
		}
	}
	box.mu.Lock()
	box.d = max(d, 0)
	box.mu.Unlock()
	return res, nil
}

// after joins the error that ended a retry loop (usually the context's
// end, cutting an attempt short) with the endpoint's last transient
// failure, which is what explains the give-up. Both stay matchable with
// errors.Is and errors.As.
func after(err, last error) error {
	if last == nil {
		return err
	}
	return fmt.Errorf("%w, after %w", err, last)
}

// sleep waits d or until ctx ends; it reports whether the wait completed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
