package main

import (
	"fmt"
	"net"
	"time"

	"github.com/gravitycar/tollgate/internal/config"
	"github.com/gravitycar/tollgate/internal/pricing"
	"github.com/gravitycar/tollgate/internal/ratelimit"
)

// settings is everything the api reads from its environment.
type settings struct {
	config.Common
	HTTPAddr string

	AuthMode      string // "jwks" or "dev"
	JWKSURL       string
	Issuer        string
	Audience      string
	AdminSubjects []string
	TokenCacheTTL time.Duration

	CORSOrigins      []string
	MaxQuestionChars int
	SyncWait         time.Duration
	QueryTTL         time.Duration

	RateLimit   ratelimit.Policy
	DailyBudget pricing.Nanos
	Model       string // OPENAI_MODEL: reservations are priced as this model
	MaxTokens   int    // OPENAI_MAX_TOKENS: the completion part of a reservation
	PricingFile string

	heartbeat time.Duration // SSE heartbeat interval: heartbeatEvery; not configurable, tests shorten it
}

func loadSettings(getenv func(string) string) (settings, error) {
	env := config.New(getenv)
	s := settings{
		Common:           env.Common(),
		HTTPAddr:         env.String("HTTP_ADDR", "127.0.0.1:8080"),
		AuthMode:         env.OneOf("AUTH_MODE", "jwks", "jwks", "dev"),
		JWKSURL:          env.String("AUTH_JWKS_URL", ""),
		Issuer:           env.String("AUTH_ISSUER", ""),
		Audience:         env.String("AUTH_AUDIENCE", ""),
		AdminSubjects:    env.List("ADMIN_SUBJECTS", nil),
		TokenCacheTTL:    env.Duration("TOKEN_CACHE_TTL", 300*time.Second),
		CORSOrigins:      env.List("CORS_ORIGINS", []string{"http://localhost:3000"}),
		MaxQuestionChars: env.IntRange("MAX_QUESTION_CHARS", 2000, 1, 100_000),
		SyncWait:         env.Duration("SYNC_WAIT_SECONDS", 60*time.Second),
		QueryTTL:         env.Duration("QUERY_TTL", 24*time.Hour),
		RateLimit: ratelimit.Policy{
			Capacity:        env.Float("TOKEN_BUCKET_CAPACITY", 15),
			RefillPerSecond: env.Float("TOKEN_REFILL_RATE", 0.016667),
			DailyLimit:      env.IntRange("DAILY_USER_REQUEST_LIMIT", 30, 0, 1_000_000_000),
		},
		DailyBudget: usd(env, "DAILY_BUDGET_USD", "1.00"),
		Model:       env.String("OPENAI_MODEL", "gpt-4o-mini"),
		MaxTokens:   env.IntRange("OPENAI_MAX_TOKENS", 512, 1, 1_000_000),
		PricingFile: env.String("PRICING_FILE", ""),
	}
	if err := s.RateLimit.Validate(); err != nil {
		env.Fail("TOKEN_BUCKET_CAPACITY/TOKEN_REFILL_RATE", fmt.Sprint(s.RateLimit.Capacity, "/", s.RateLimit.RefillPerSecond), err.Error())
	}
	if s.QueryTTL < time.Minute {
		env.Fail("QUERY_TTL", s.QueryTTL.String(), "must be at least 1m")
	}
	switch s.AuthMode {
	case "jwks":
		for _, v := range [][2]string{{"AUTH_JWKS_URL", s.JWKSURL}, {"AUTH_ISSUER", s.Issuer}, {"AUTH_AUDIENCE", s.Audience}} {
			if v[1] == "" {
				env.Fail(v[0], v[1], "required unless AUTH_MODE=dev")
			}
		}
	case "dev":
		if !loopback(s.HTTPAddr) {
			env.Fail("HTTP_ADDR", s.HTTPAddr, "AUTH_MODE=dev listens on loopback only (127.0.0.1, ::1 or localhost)")
		}
	}
	if err := env.Err(); err != nil {
		return settings{}, err
	}
	return s, nil
}

// usd reads an amount of dollars exactly ("1.00", "0.25").
func usd(env *config.Reader, name, def string) pricing.Nanos {
	v := env.String(name, def)
	n, err := pricing.ParseUSD(v)
	if err != nil || n <= 0 {
		env.Fail(name, v, "must be a positive amount of US dollars, like 1.00")
		return 0
	}
	return n
}

// loopback reports whether a listen address is bound to the loopback
// interface only. An empty host ("":8080) listens everywhere.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s settings) String() string {
	return fmt.Sprintf("http=%s auth=%s nats=%q", s.HTTPAddr, s.AuthMode, s.NATSURL)
}
