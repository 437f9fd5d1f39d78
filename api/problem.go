package main

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// problem is an RFC 9457 problem details body.
type problem struct {
	Type   string            `json:"type"`
	Title  string            `json:"title"`
	Status int               `json:"status"`
	Detail string            `json:"detail,omitempty"`
	Errors map[string]string `json:"errors,omitempty"` // per-field messages, for 400
}

// problemTitles are the human titles by status; the type URI
// ("urn:tollgate:problem:<kind>") is what a client switches on.
var problemTitles = map[int]string{
	http.StatusBadRequest:            "Invalid request",
	http.StatusUnauthorized:          "Authentication required",
	http.StatusForbidden:             "Forbidden",
	http.StatusNotFound:              "Not found",
	http.StatusMethodNotAllowed:      "Method not allowed",
	http.StatusRequestEntityTooLarge: "Request body too large",
	http.StatusUnsupportedMediaType:  "Unsupported media type",
	http.StatusUnprocessableEntity:   "Unprocessable request",
	http.StatusTooManyRequests:       "Rate limit exceeded",
	http.StatusInternalServerError:   "Internal error",
	http.StatusServiceUnavailable:    "Service unavailable",
}

// writeProblem aborts the request with a problem+json body. kind is a short
// slug that becomes the type URI ("validation", "rate-limited").
func writeProblem(c *gin.Context, status int, kind, detail string, fieldErrors map[string]string) {
	title := problemTitles[status]
	if title == "" {
		title = http.StatusText(status)
	}
	p := problem{
		Type:   "urn:tollgate:problem:" + kind,
		Title:  title,
		Status: status,
		Detail: detail,
		Errors: fieldErrors,
	}
	c.Header("Content-Type", "application/problem+json")
	c.AbortWithStatusJSON(status, p)
}
