package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ConnectOptions says how a process reaches NATS.
type ConnectOptions struct {
	Name  string // client name, shown in the server's connection list
	URL   string // comma-separated servers; empty starts an embedded server
	Creds string // optional credentials file for URL

	// For the embedded server only.
	DataDir    string // JetStream file storage lives in DataDir/nats
	ListenAddr string // host:port for other processes to connect to; empty = in-process only

	Logger *slog.Logger
}

// Conn is a live NATS connection with JetStream, and the embedded server
// behind it if there is one.
type Conn struct {
	NC       *nats.Conn
	JS       jetstream.JetStream
	embedded *server.Server
	closed   chan struct{}
}

// Connect connects to opts.URL, or starts an embedded nats-server with
// JetStream when it is empty.
func Connect(ctx context.Context, opts ConnectOptions) (*Conn, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	natsOpts := []nats.Option{
		nats.Name(opts.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: we closed it ourselves
				logger.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "url", nc.ConnectedUrl())
		}),
	}
	c := &Conn{closed: make(chan struct{})}
	natsOpts = append(natsOpts, nats.ClosedHandler(func(*nats.Conn) { close(c.closed) }))
	url := opts.URL
	if url == "" {
		s, err := startEmbedded(opts)
		if err != nil {
			return nil, err
		}
		c.embedded = s
		if opts.ListenAddr == "" {
			natsOpts = append(natsOpts, nats.InProcessServer(s))
		}
		url = s.ClientURL()
		logger.Info("embedded nats-server started", "listen", opts.ListenAddr, "store", s.StoreDir())
	} else if opts.Creds != "" {
		natsOpts = append(natsOpts, nats.UserCredentials(opts.Creds))
	}

	// A server that is still starting (compose, Kubernetes) is waited for
	// until ctx ends, rather than failing the process at once.
	natsOpts = append(natsOpts, nats.RetryOnFailedConnect(true))
	nc, err := nats.Connect(url, natsOpts...)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("connecting to nats %s: %w", url, err)
	}
	c.NC = nc
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			c.Close()
			return nil, fmt.Errorf("connecting to nats %s: %w", url, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	c.JS = js
	return c, nil
}

func startEmbedded(opts ConnectOptions) (*server.Server, error) {
	if opts.DataDir == "" {
		return nil, errors.New("embedded nats: DATA_DIR is empty")
	}
	sopts := &server.Options{
		ServerName: "tollgate-embedded",
		JetStream:  true,
		StoreDir:   filepath.Join(opts.DataDir, "nats"),
		NoSigs:     true,
		NoLog:      true,
		DontListen: opts.ListenAddr == "",
	}
	if opts.ListenAddr != "" {
		host, port, err := net.SplitHostPort(opts.ListenAddr)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen address %q: %w", opts.ListenAddr, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen port %q: %w", port, err)
		}
		sopts.Host, sopts.Port = host, p
	}
	s, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded nats: not ready after 30s (is the port in use, or DATA_DIR locked by another process?)")
	}
	return s, nil
}

// EmbeddedURL is the address other processes can use to reach the embedded
// server, or "" when there is none or it does not listen.
func (c *Conn) EmbeddedURL() string {
	if c.embedded == nil || c.embedded.Addr() == nil {
		return ""
	}
	return c.embedded.ClientURL()
}

// Close drains the connection, so that pending publishes and acks are
// flushed, then stops the embedded server if there is one.
func (c *Conn) Close() {
	if c.NC != nil {
		if err := c.NC.Drain(); err != nil {
			c.NC.Close()
		}
		select {
		case <-c.closed:
		case <-time.After(30 * time.Second): // the default drain timeout
			c.NC.Close()
		}
	}
	if c.embedded != nil {
		c.embedded.Shutdown()
		c.embedded.WaitForShutdown()
	}
}
