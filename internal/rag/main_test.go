package rag

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

// corpusDir is the sample corpus shipped with the repository.
const corpusDir = "../../samples/corpus"

func TestMain(m *testing.M) {
	// IgnoreCurrent: bleve starts its analysis workers when the package loads.
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

// startServer runs an in-process nats-server with JetStream, storing in a
// temporary folder, until the test ends.
func startServer(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		t.Fatalf("creating nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats-server not ready for connections")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// connect opens a connection of its own to s, as a separate worker would.
func connect(t testing.TB, s *server.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("connecting to nats-server: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("creating JetStream context: %v", err)
	}
	return js
}

// chunksBucket creates (or binds) the chunks bucket with file storage.
func chunksBucket(t testing.TB, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:  ChunksBucket,
		Storage: jetstream.FileStorage,
	})
	if err != nil {
		t.Fatalf("creating bucket %s: %v", ChunksBucket, err)
	}
	return kv
}

// newKV starts a server and returns its chunks bucket.
func newKV(t testing.TB) jetstream.KeyValue {
	t.Helper()
	return chunksBucket(t, connect(t, startServer(t)))
}

// runIndex starts an Index on kv, after tune (if any) has adjusted it, and
// stops it when the test ends, failing the test if Run returned an error.
func runIndex(t testing.TB, kv jetstream.KeyValue, tune func(*Index)) *Index {
	t.Helper()
	ix, err := NewIndex(slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatalf("NewIndex: %v", err)
	}
	if tune != nil {
		tune(ix)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx, kv) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := ix.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return ix
}

// waitReady waits for the index's initial replay, with a deadline.
func waitReady(t testing.TB, ix *Index) {
	t.Helper()
	select {
	case <-ix.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("index not ready after 20s")
	}
}

// ingest loads dir into kv and fails the test on an error.
func ingest(t testing.TB, kv jetstream.KeyValue, dir string) IngestReport {
	t.Helper()
	rep, err := Ingest(context.Background(), kv, dir, nil)
	if err != nil {
		t.Fatalf("Ingest(%s): %v", dir, err)
	}
	return rep
}
