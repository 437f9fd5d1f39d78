// Package natstest starts a real, in-process nats-server with JetStream for
// tests. Each call gets its own server on a random loopback port with storage
// in the test's temporary directory.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Start starts a server and returns a connection to it. Both are closed when
// the test ends. The server's URL is nc.ConnectedUrl().
func Start(t testing.TB) *nats.Conn {
	t.Helper()
	s := StartServer(t)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("connecting to test nats-server: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// StartServer starts a server and returns it, for tests that stop and
// restart it. It is shut down when the test ends.
func StartServer(t testing.TB) *server.Server {
	t.Helper()
	return StartServerAt(t, t.TempDir(), -1)
}

// StartServerAt starts a server on the given port (-1 = random) with its
// JetStream storage in dir, so a test can restart a server with its data.
func StartServerAt(t testing.TB, dir string, port int) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  dir,
		NoSigs:    true,
		NoLog:     true,
	})
	if err != nil {
		t.Fatalf("creating test nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		t.Fatal("test nats-server not ready after 30s")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}
