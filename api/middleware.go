package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/oklog/ulid/v2"

	"github.com/gravitycar/tollgate/internal/auth"
)

const (
	ctxLogger    = "tollgate.logger"
	ctxPrincipal = "tollgate.principal"
	ctxRequestID = "tollgate.request_id"
	ctxDetached  = "tollgate.detached" // the request was handed to a detached waiter (detach.go)
)

// requestID gives every request an id, taken from a well-formed incoming
// X-Request-Id or made anew, and echoes it in the response.
func requestID() gin.HandlerFunc {
	return func(c *gin.Context) {
		id := c.GetHeader("X-Request-Id")
		if !validRequestID(id) {
			id = ulid.Make().String()
		}
		c.Set(ctxRequestID, id)
		c.Header("X-Request-Id", id)
		c.Next()
	}
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		if r < '!' || r > '~' {
			return false
		}
	}
	return true
}

// accessLog puts a logger carrying the request id in the context, for every
// line logged about the request, and logs one line when it ends.
func accessLog(logger *slog.Logger, m *metrics) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		l := logger.With("request_id", c.GetString(ctxRequestID))
		c.Set(ctxLogger, l)
		c.Next()

		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		status := c.Writer.Status()
		elapsed := time.Since(start)
		m.observeRequest(c.Request.Method, route, status, elapsed)
		if route == "/health" || route == "/healthz" || route == "/readyz" || route == "/metrics" {
			return
		}
		attrs := []any{
			"method", c.Request.Method,
			"path", c.Request.URL.Path,
			"status", status,
			"duration_ms", float64(elapsed.Microseconds()) / 1000,
			"bytes", c.Writer.Size(),
		}
		if p, ok := principal(c); ok {
			attrs = append(attrs, "user", p.Subject)
		}
		if c.GetBool(ctxDetached) {
			// Handed over to a detached waiter (detach.go): duration and
			// bytes are those of the hand-over, not of the answer.
			attrs = append(attrs, "detached", true)
		}
		if len(c.Errors) > 0 {
			attrs = append(attrs, "err", c.Errors.String())
		}
		l.Info("request", attrs...)
	}
}

// recovery turns a panic into a 500 problem and logs it with the request id.
func recovery() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if r := recover(); r != nil {
				if err, ok := r.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(r)
				}
				reqLogger(c).Error("panic", "panic", r)
				writeProblem(c, http.StatusInternalServerError, "internal", "", nil)
			}
		}()
		c.Next()
	}
}

func reqLogger(c *gin.Context) *slog.Logger {
	if l, ok := c.Get(ctxLogger); ok {
		return l.(*slog.Logger)
	}
	return slog.New(slog.DiscardHandler)
}

// Verifier checks a bearer token and says whose it is.
type Verifier interface {
	Verify(ctx context.Context, raw string) (auth.Principal, error)
}

// authenticate requires a valid bearer token and puts its principal in the
// context. Failures are 401 with a WWW-Authenticate challenge (RFC 6750).
func authenticate(v Verifier) gin.HandlerFunc {
	return func(c *gin.Context) {
		header := c.GetHeader("Authorization")
		raw, err := auth.ParseBearer(header)
		if err == nil {
			var p auth.Principal
			if p, err = v.Verify(c.Request.Context(), raw); err == nil {
				c.Set(ctxPrincipal, p)
				c.Next()
				return
			}
		}
		challenge := `Bearer realm="tollgate"`
		if header != "" {
			challenge += `, error="invalid_token", error_description="` + strings.ReplaceAll(describe(err), `"`, "'") + `"`
		}
		reqLogger(c).Info("authentication failed", "err", err)
		c.Header("WWW-Authenticate", challenge)
		writeProblem(c, http.StatusUnauthorized, "unauthenticated", describe(err), nil)
	}
}

// describe is the part of an auth error a client may see.
func describe(err error) string {
	if err == nil {
		return ""
	}
	return strings.TrimPrefix(err.Error(), auth.ErrInvalidToken.Error()+": ")
}

func principal(c *gin.Context) (auth.Principal, bool) {
	v, ok := c.Get(ctxPrincipal)
	if !ok {
		return auth.Principal{}, false
	}
	p, ok := v.(auth.Principal)
	return p, ok
}

// retryAfter sets Retry-After in whole seconds, at least 1.
func retryAfter(c *gin.Context, d time.Duration) {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	c.Header("Retry-After", strconv.FormatInt(s, 10))
}
