package main

import (
	"net/http"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"
)

// CORS: what a browser frontend on an allowed origin may send and read.
var (
	corsMethods = strings.Join([]string{"GET", "POST", "OPTIONS"}, ", ")
	corsHeaders = strings.Join([]string{"Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID", "X-Request-Id"}, ", ")
	corsExpose  = strings.Join([]string{"Location", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset",
		"Retry-After", "X-Request-Id", "Idempotent-Replayed"}, ", ")
)

// cors answers preflights from CORS_ORIGINS and marks their responses
// readable; other origins get no CORS headers at all, so browsers refuse
// them. Tokens travel in Authorization, so credentials are not allowed.
func cors(origins []string) gin.HandlerFunc {
	return func(c *gin.Context) {
		origin := c.GetHeader("Origin")
		if origin == "" {
			c.Next()
			return
		}
		c.Writer.Header().Add("Vary", "Origin")
		allowed := slices.Contains(origins, origin)
		preflight := c.Request.Method == http.MethodOptions && c.GetHeader("Access-Control-Request-Method") != ""
		if allowed {
			c.Header("Access-Control-Allow-Origin", origin)
			c.Header("Access-Control-Expose-Headers", corsExpose)
		}
		if preflight {
			if allowed {
				c.Header("Access-Control-Allow-Methods", corsMethods)
				c.Header("Access-Control-Allow-Headers", corsHeaders)
				c.Header("Access-Control-Max-Age", "600")
			}
			c.AbortWithStatus(http.StatusNoContent)
			return
		}
		c.Next()
	}
}
