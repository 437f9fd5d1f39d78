package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/gravitycar/tollgate/internal/auth"
	"github.com/gravitycar/tollgate/internal/budget"
	"github.com/gravitycar/tollgate/internal/config"
	"github.com/gravitycar/tollgate/internal/logging"
	"github.com/gravitycar/tollgate/internal/pricing"
	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
	"github.com/gravitycar/tollgate/internal/ratelimit"
)

// run is the api: it reads its settings through getenv, connects to NATS,
// serves HTTP until ctx ends, then drains in-flight requests.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	getenv, err := config.WithDotEnv(".env", getenv)
	if err != nil {
		return err
	}
	if len(args) > 1 {
		switch args[1] {
		case "token":
			return tokenCommand(args[2:], config.New(getenv).String("DATA_DIR", "./data"), stdout)
		default:
			return fmt.Errorf("unknown command %q (commands: token)", args[1])
		}
	}
	s, err := loadSettings(getenv)
	if err != nil {
		return err
	}
	logger, err := logging.New(stdout, s.LogLevel, s.LogFormat)
	if err != nil {
		return err
	}

	verifier, err := newVerifier(ctx, s, logger)
	if err != nil {
		return err
	}

	conn, err := queue.Connect(ctx, queue.ConnectOptions{
		Name: "tollgate-api", URL: s.NATSURL, Creds: s.NATSCreds,
		DataDir: s.DataDir, ListenAddr: s.NATSListen, Logger: logger,
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	layout := queue.Layout{Replicas: s.Replicas, QueryTTL: s.QueryTTL}
	if err := queue.EnsureStreams(ctx, conn.JS, layout, queue.QueriesStream); err != nil {
		return err
	}
	kvs, err := queue.EnsureBuckets(ctx, conn.JS, layout, queue.QueriesBucket, queue.RateLimitBucket, queue.BudgetBucket, queue.AlertsBucket, queue.IdempotencyBucket)
	if err != nil {
		return err
	}
	meter, err := newMetering(s, kvs, logger, time.Now)
	if err != nil {
		return err
	}

	m := newMetrics()
	h := newHub(logger)
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_waiters",
		Help: "Requests waiting for a query to change: long-polls, event streams and synchronous calls.",
	}, func() float64 { n, _ := h.counts(); return float64(n) }))
	q := &queries{
		meter:     meter,
		idem:      &idempotency{kv: kvs[queue.IdempotencyBucket]},
		hub:       h,
		syncWait:  s.SyncWait,
		store:     query.NewStore(kvs[queue.QueriesBucket]),
		js:        conn.JS,
		now:       time.Now,
		maxChars:  s.MaxQuestionChars,
		metrics:   m,
		detached:  newDetached(),
		heartbeat: s.heartbeat,
	}
	ready := func(ctx context.Context) error {
		if !conn.NC.IsConnected() {
			return errors.New("nats is not connected")
		}
		if _, err := conn.JS.Stream(ctx, queue.QueriesStream); err != nil {
			return fmt.Errorf("stream %s: %w", queue.QueriesStream, err)
		}
		for _, b := range []string{queue.QueriesBucket, queue.RateLimitBucket, queue.BudgetBucket} {
			if _, err := conn.JS.KeyValue(ctx, b); err != nil {
				return fmt.Errorf("bucket %s: %w", b, err)
			}
		}
		select {
		case <-meter.guard.Ready():
		default:
			return errors.New("budget ledger not loaded yet")
		}
		select {
		case <-h.ready:
		default:
			return errors.New("query watch not started yet")
		}
		return nil
	}
	router := newRouter(routerDeps{
		logger: logger, metrics: m, verifier: verifier, queries: q, ready: ready, devIssuer: devIssuerOf(verifier),
		admins: s.AdminSubjects, corsOrigins: s.CORSOrigins,
		usage: &usage{budgetKV: kvs[queue.BudgetBucket], alertsKV: kvs[queue.AlertsBucket], guard: meter.guard, now: time.Now},
	})

	ln, err := net.Listen("tcp", s.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.HTTPAddr, err)
	}
	srv := &http.Server{
		Handler:           router,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	logger.Info("listening", "addr", ln.Addr().String(), "auth", s.AuthMode, "nats", natsDesc(s, conn))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return meter.guard.Run(gctx) })
	g.Go(func() error { return h.run(gctx, kvs[queue.QueriesBucket]) })
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		logger.Info("shutting down: draining in-flight requests")
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		// First the waiters taken off net/http, which Shutdown does not
		// see: the hub has stopped, so they would learn nothing more.
		// Waits that start from now on are held the usual way.
		q.detached.shutdown()
		return srv.Shutdown(sctx)
	})
	return g.Wait()
}

func natsDesc(s settings, conn *queue.Conn) string {
	if u := conn.EmbeddedURL(); u != "" {
		return "embedded " + u
	}
	if s.NATSURL == "" {
		return "embedded (in-process)"
	}
	return conn.NC.ConnectedUrl()
}

// newMetering builds the rate limiter and the budget guard.
func newMetering(s settings, kvs map[string]jetstream.KeyValue, logger *slog.Logger, now func() time.Time) (*metering, error) {
	prices, err := pricing.Load(s.PricingFile)
	if err != nil {
		return nil, fmt.Errorf("PRICING_FILE: %w", err)
	}
	price, err := prices.Price(s.Model)
	if err != nil {
		return nil, fmt.Errorf("config: OPENAI_MODEL=%q has no price; add it to PRICING_FILE (%w)", s.Model, err)
	}
	limiter, err := ratelimit.New(kvs[queue.RateLimitBucket], s.RateLimit, now)
	if err != nil {
		return nil, err
	}
	return &metering{
		policy:    s.RateLimit,
		limiter:   limiter,
		guard:     budget.NewGuard(kvs[queue.BudgetBucket], s.DailyBudget, logger, now),
		price:     price,
		maxTokens: s.MaxTokens,
		holdFor:   s.QueryTTL,
		now:       now,
	}, nil
}

// devVerifier is the verifier of AUTH_MODE=dev, which can also mint tokens.
type devVerifier struct {
	*auth.Verifier
	issuer *auth.Issuer
}

func devIssuerOf(v Verifier) *auth.Issuer {
	if d, ok := v.(devVerifier); ok {
		return d.issuer
	}
	return nil
}

func newVerifier(ctx context.Context, s settings, logger *slog.Logger) (Verifier, error) {
	if s.AuthMode == "dev" {
		iss, err := auth.LoadOrCreateIssuer(filepath.Join(s.DataDir, "dev"))
		if err != nil {
			return nil, fmt.Errorf("dev issuer: %w", err)
		}
		v, err := auth.NewVerifier(ctx, auth.Options{
			JWKSJSON: iss.JWKS(), Issuer: auth.DevIssuer, Audience: auth.DevAudience, CacheTTL: s.TokenCacheTTL, Logger: logger,
		})
		if err != nil {
			return nil, err
		}
		logger.Warn("AUTH_MODE=dev: tokens are issued locally; never use this in production")
		return devVerifier{Verifier: v, issuer: iss}, nil
	}
	return auth.NewVerifier(ctx, auth.Options{
		JWKSURL: s.JWKSURL, Issuer: s.Issuer, Audience: s.Audience, CacheTTL: s.TokenCacheTTL, Logger: logger,
	})
}

// tokenCommand prints a dev token: api token USER [--admin].
func tokenCommand(args []string, dataDir string, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "" || strings.HasPrefix(args[0], "-") {
		return errors.New("usage: api token USER [--admin]")
	}
	iss, err := auth.LoadOrCreateIssuer(filepath.Join(dataDir, "dev"))
	if err != nil {
		return fmt.Errorf("dev issuer: %w", err)
	}
	var scopes []string
	if slices.Contains(args[1:], "--admin") {
		scopes = append(scopes, "tollgate:admin")
	}
	tok, err := iss.Token(args[0], 24*time.Hour, scopes...)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

type routerDeps struct {
	logger      *slog.Logger
	metrics     *metrics
	verifier    Verifier
	queries     *queries
	ready       func(context.Context) error
	devIssuer   *auth.Issuer
	admins      []string
	usage       *usage
	corsOrigins []string
}

func newRouter(d routerDeps) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true
	r.Use(requestID(), accessLog(d.logger, d.metrics), recovery(), cors(d.corsOrigins))

	health := func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) }
	r.GET("/health", health)
	r.GET("/healthz", health)
	r.GET("/readyz", func(c *gin.Context) {
		ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
		defer cancel()
		if err := d.ready(ctx); err != nil {
			writeProblem(c, http.StatusServiceUnavailable, "not-ready", err.Error(), nil)
			return
		}
		c.JSON(http.StatusOK, gin.H{"status": "ready"})
	})
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(d.metrics.registry, promhttp.HandlerOpts{})))

	v1 := r.Group("/v1", authenticate(d.verifier), d.queries.meter.withRateHeaders)
	v1.POST("/queries", d.queries.create)
	v1.GET("/queries/:id", d.queries.get)
	v1.GET("/queries/:id/events", d.queries.events)
	v1.GET("/me", d.queries.meter.me)
	v1.GET("/admin/usage", requireAdmin(d.admins), d.usage.get)
	r.POST("/api/query", authenticate(d.verifier), d.queries.meter.withRateHeaders, d.queries.sync)

	if d.devIssuer != nil {
		r.GET("/dev/token", devToken(d.devIssuer))
	}
	serveWeb(r)

	r.NoRoute(func(c *gin.Context) { writeProblem(c, http.StatusNotFound, "not-found", "no such endpoint", nil) })
	r.NoMethod(func(c *gin.Context) {
		writeProblem(c, http.StatusMethodNotAllowed, "method-not-allowed", c.Request.Method+" is not allowed here", nil)
	})
	return r
}

// devToken mints a token for ?user= (AUTH_MODE=dev only, which listens on
// loopback only), for the web page's dev sign-in.
func devToken(iss *auth.Issuer) gin.HandlerFunc {
	return func(c *gin.Context) {
		user := strings.TrimSpace(c.Query("user"))
		if user == "" || len(user) > 256 {
			writeProblem(c, http.StatusBadRequest, "validation", "user is required", map[string]string{"user": "required, at most 256 characters"})
			return
		}
		var scopes []string
		if c.Query("admin") == "true" {
			scopes = append(scopes, "tollgate:admin")
		}
		tok, err := iss.Token(user, 24*time.Hour, scopes...)
		if err != nil {
			c.Error(err)
			writeProblem(c, http.StatusInternalServerError, "internal", "", nil)
			return
		}
		c.JSON(http.StatusOK, gin.H{"access_token": tok, "token_type": "Bearer", "expires_in": 86400})
	}
}
