package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/natstest"
	"github.com/gravitycar/tollgate/internal/queue"
)

// waitTimeout bounds every wait on a condition; generous for a loaded
// 2-core machine running with -race.
const waitTimeout = 20 * time.Second

// newBuckets starts a nats-server and returns n handles on its `alerts`
// bucket, each on its own connection, as n replicas would have.
func newBuckets(t *testing.T, n int) []jetstream.KeyValue {
	t.Helper()
	nc := natstest.Start(t)
	kvs := make([]jetstream.KeyValue, n)
	for i := range kvs {
		conn := nc
		if i > 0 {
			var err error
			if conn, err = nats.Connect(nc.ConnectedUrl()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(conn.Close)
		}
		js, err := jetstream.New(conn)
		if err != nil {
			t.Fatal(err)
		}
		buckets, err := queue.EnsureBuckets(t.Context(), js, queue.Layout{}, queue.AlertsBucket)
		if err != nil {
			t.Fatal(err)
		}
		kvs[i] = buckets[queue.AlertsBucket]
	}
	return kvs
}

// newTestSender returns a Sender with test-sized backoff and lease.
func newTestSender(t *testing.T, kv jetstream.KeyValue, m Mailer, logger *slog.Logger, owner string) *Sender {
	t.Helper()
	s, err := NewSender(kv, m, SenderConfig{
		From:       testFrom,
		To:         testTo,
		Logger:     logger,
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
		Lease:      5 * time.Second,
		Owner:      owner,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// start runs s.Run until the returned stop is called (or the test ends);
// stop waits for Run to return and checks that it returned nil.
func start(t *testing.T, s *Sender) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(waitTimeout):
				t.Errorf("Run did not return within %v of cancel", waitTimeout)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// state returns the alert with the given key, or the zero State.
func state(t *testing.T, s *Sender, key string) State {
	t.Helper()
	states, err := s.List(t.Context(), "2026-12-03")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, st := range states {
		if st.Key == key {
			return st
		}
	}
	return State{}
}

// messagesWithID counts received messages carrying the Message-ID of key.
func messagesWithID(srv *smtpServer, key string) int {
	n := 0
	for _, r := range srv.Received() {
		if bytes.Contains(r.Data, []byte("<tollgate-alert."+key+"@")) {
			n++
		}
	}
	return n
}

func TestClaimOncePerDayAndThreshold(t *testing.T) {
	kv := newBuckets(t, 1)[0]
	s := newTestSender(t, kv, mailerFunc(func(context.Context, Message) error { return nil }), nil, "a")
	n := eightyPercent()

	for i, want := range []bool{true, false} {
		claimed, err := s.Claim(t.Context(), n)
		if err != nil || claimed != want {
			t.Fatalf("Claim #%d = %v, %v; want %v, nil", i+1, claimed, err, want)
		}
	}
	n.Threshold = 1
	if claimed, err := s.Claim(t.Context(), n); err != nil || !claimed {
		t.Fatalf("Claim of the 100%% threshold = %v, %v; want true, nil", claimed, err)
	}

	states, err := s.List(t.Context(), "2026-12-03")
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 2 || states[0].Key != "2026-12-03.t0800" || states[1].Key != "2026-12-03.t1000" {
		t.Fatalf("List = %+v, want the 80%% and 100%% alerts in order", states)
	}
	st := states[0]
	if st.Status != StatusPending || st.Attempts != 0 || st.ClaimedAt.IsZero() || st.Notice.Spent != n.Spent ||
		len(st.Notice.TopUsers) != 2 || !st.Notice.CrossedAt.Equal(n.CrossedAt) {
		t.Errorf("claimed state = %+v", st)
	}
	if other, err := s.List(t.Context(), "2026-12-04"); err != nil || len(other) != 0 {
		t.Errorf("List of another day = %v, %v; want nothing", other, err)
	}
	if _, err := s.List(t.Context(), "2026-12-03.>"); err == nil {
		t.Error("List with a malformed day: no error")
	}

	for _, bad := range []Notice{{Day: "03/12/2026", Threshold: 0.8}, {Day: "2026-12-03", Threshold: 0}} {
		if _, err := s.Claim(t.Context(), bad); !errors.Is(err, ErrInvalidNotice) {
			t.Errorf("Claim(%+v) error = %v, want ErrInvalidNotice", bad, err)
		}
	}
}

// TestExactlyOnceAcrossReplicas runs two Senders, as two alerter replicas,
// that both see the crossing and both claim it: one email.
func TestExactlyOnceAcrossReplicas(t *testing.T) {
	srv := startSMTP(t)
	kvs := newBuckets(t, 2)
	a := newTestSender(t, kvs[0], srv.Mailer(), nil, "replica-a")
	b := newTestSender(t, kvs[1], srv.Mailer(), nil, "replica-b")
	stopA, stopB := start(t, a), start(t, b)

	n := eightyPercent()
	key := Key(n.Day, n.Threshold)
	claims := make(chan bool, 2)
	for _, s := range []*Sender{a, b} {
		go func() {
			ok, err := s.Claim(context.Background(), n)
			if err != nil {
				t.Errorf("Claim: %v", err)
			}
			claims <- ok
		}()
	}
	if c1, c2 := <-claims, <-claims; c1 == c2 {
		t.Fatalf("claims = %v, %v; want exactly one true", c1, c2)
	}
	waitFor(t, "the alert to be marked sent", func() bool { return state(t, a, key).Status == StatusSent })
	stopA()
	stopB() // no send is in flight after Run returns

	if got := len(srv.Received()); got != 1 {
		t.Fatalf("server received %d emails, want 1", got)
	}
	if got := srv.Mails(); got != 1 {
		t.Errorf("server saw %d MAIL commands, want 1", got)
	}
	st := state(t, b, key)
	if st.Attempts != 1 || st.SentAt.IsZero() || st.LeaseOwner != "" {
		t.Errorf("state after sending = %+v", st)
	}
	p := parseMessage(t, srv.Received()[0].Data)
	if !strings.Contains(p.Header.Get("Subject"), "80%") {
		t.Errorf("Subject = %q", p.Header.Get("Subject"))
	}
}

// TestRestartSendsClaimedAlertOnce: a Sender claims while SMTP is down and
// is stopped; a new Sender sends the alert once, and a third one never
// sends it again.
func TestRestartSendsClaimedAlertOnce(t *testing.T) {
	srv := startSMTP(t)
	srv.Stop()
	kv := newBuckets(t, 1)[0]
	n := eightyPercent()
	key := Key(n.Day, n.Threshold)

	first := newTestSender(t, kv, srv.Mailer(), nil, "first")
	stopFirst := start(t, first)
	if ok, err := first.Claim(t.Context(), n); err != nil || !ok {
		t.Fatalf("Claim = %v, %v", ok, err)
	}
	waitFor(t, "a failed attempt", func() bool { return state(t, first, key).LastError != "" })
	stopFirst()
	st := state(t, first, key)
	if st.Status != StatusPending || st.LeaseOwner != "" {
		t.Fatalf("after the first Sender stopped: %+v; want pending with no lease", st)
	}

	srv.Start()
	second := newTestSender(t, kv, srv.Mailer(), nil, "second")
	stopSecond := start(t, second)
	waitFor(t, "the alert to be sent", func() bool { return state(t, second, key).Status == StatusSent })
	stopSecond()
	if got := messagesWithID(srv, key); got != 1 {
		t.Fatalf("received %d copies of the alert, want 1", got)
	}

	// A third Sender reads the bucket in order: by the time it has sent a
	// newer alert it has passed over the sent one.
	third := newTestSender(t, kv, srv.Mailer(), nil, "third")
	start(t, third)
	n.Threshold = 1
	if ok, err := third.Claim(t.Context(), n); err != nil || !ok {
		t.Fatalf("Claim of the 100%% alert = %v, %v", ok, err)
	}
	waitFor(t, "the 100% alert to arrive", func() bool { return messagesWithID(srv, Key(n.Day, 1)) == 1 })
	if got := messagesWithID(srv, key); got != 1 {
		t.Errorf("the 80%% alert was received %d times, want 1", got)
	}
}

// TestExpiredLeaseIsTakenOver: a replica died mid-send, leaving its lease.
// Another replica sends the alert, after the lease.
func TestExpiredLeaseIsTakenOver(t *testing.T) {
	srv := startSMTP(t)
	kv := newBuckets(t, 1)[0]
	s := newTestSender(t, kv, srv.Mailer(), nil, "survivor")
	n := eightyPercent()
	key := Key(n.Day, n.Threshold)
	if ok, err := s.Claim(t.Context(), n); err != nil || !ok {
		t.Fatalf("Claim = %v, %v", ok, err)
	}

	// Write the dead replica's lease as attempt() would have.
	e, err := kv.Get(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		t.Fatal(err)
	}
	leaseUntil := time.Now().Add(500 * time.Millisecond)
	st.Attempts, st.LeaseOwner, st.LeaseUntil = 1, "dead-replica", leaseUntil
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(t.Context(), key, data, e.Revision()); err != nil {
		t.Fatal(err)
	}

	start(t, s)
	waitFor(t, "the alert to be sent", func() bool { return state(t, s, key).Status == StatusSent })
	got := state(t, s, key)
	if got.SentAt.Before(leaseUntil) {
		t.Errorf("sent at %v, before the dead replica's lease ended at %v", got.SentAt, leaseUntil)
	}
	if got.Attempts != 2 {
		t.Errorf("Attempts = %d, want 2 (the dead replica's and ours)", got.Attempts)
	}
	if c := messagesWithID(srv, key); c != 1 {
		t.Errorf("received %d copies, want 1", c)
	}
}

// TestRetriesUntilSMTPComesBack: the server is down at the crossing; the
// alert arrives once it is back, and List shows the failed attempts.
func TestRetriesUntilSMTPComesBack(t *testing.T) {
	srv := startSMTP(t)
	srv.Stop()
	kv := newBuckets(t, 1)[0]
	var logs syncBuffer
	s := newTestSender(t, kv, srv.Mailer(), newTestLogger(&logs), "a")
	start(t, s)
	n := eightyPercent()
	key := Key(n.Day, n.Threshold)
	if ok, err := s.Claim(t.Context(), n); err != nil || !ok {
		t.Fatalf("Claim = %v, %v", ok, err)
	}
	waitFor(t, "three failed attempts", func() bool { return state(t, s, key).Attempts >= 3 })
	st := state(t, s, key)
	if st.Status != StatusPending || st.Permanent || !strings.Contains(st.LastError, "connection refused") {
		t.Errorf("state while SMTP is down = %+v", st)
	}

	srv.Start()
	waitFor(t, "the alert to arrive", func() bool { return messagesWithID(srv, key) == 1 })
	waitFor(t, "the alert to be marked sent", func() bool { return state(t, s, key).Status == StatusSent })
	st = state(t, s, key)
	if st.Attempts <= 1 || st.LastError == "" {
		t.Errorf("state after delivery = %+v; want attempts > 1 and the last error kept", st)
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"alert email not sent; will retry\"") {
		t.Errorf("failed attempts not logged at WARN:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("a temporary failure was logged at ERROR:\n%s", logs.String())
	}
}

// TestPermanentRejectionIsLoudAndRetried: a 5xx is logged at ERROR, shown in
// List, and the alert is delivered once the configuration is fixed.
func TestPermanentRejectionIsLoudAndRetried(t *testing.T) {
	srv := startSMTP(t)
	srv.Reject(550, -1)
	kv := newBuckets(t, 1)[0]
	var logs syncBuffer
	s := newTestSender(t, kv, srv.Mailer(), newTestLogger(&logs), "a")
	start(t, s)
	n := eightyPercent()
	key := Key(n.Day, n.Threshold)
	if ok, err := s.Claim(t.Context(), n); err != nil || !ok {
		t.Fatalf("Claim = %v, %v", ok, err)
	}
	waitFor(t, "two refused attempts", func() bool { return srv.Mails() >= 2 && state(t, s, key).Attempts >= 2 })
	st := state(t, s, key)
	if st.Status != StatusPending || !st.Permanent || !strings.Contains(st.LastError, "550") {
		t.Errorf("state while refused = %+v; want pending, permanent, 550", st)
	}
	logged := logs.String()
	if !strings.Contains(logged, "level=ERROR") || !strings.Contains(logged, "key="+key) ||
		!strings.Contains(logged, "550") {
		t.Errorf("permanent refusal not logged at ERROR with key and reply:\n%s", logged)
	}

	srv.Reject(0, 0) // the owner fixed the configuration
	waitFor(t, "the alert to be marked sent", func() bool { return state(t, s, key).Status == StatusSent })
	if c := messagesWithID(srv, key); c != 1 {
		t.Errorf("received %d copies, want 1", c)
	}
	if st := state(t, s, key); st.Permanent {
		t.Errorf("state after delivery still permanent: %+v", st)
	}
}

// TestTemporaryRejectionIsRetried: 4xx replies are retried with backoff.
func TestTemporaryRejectionIsRetried(t *testing.T) {
	srv := startSMTP(t)
	srv.Reject(451, 2)
	kv := newBuckets(t, 1)[0]
	s := newTestSender(t, kv, srv.Mailer(), nil, "a")
	start(t, s)
	n := eightyPercent()
	key := Key(n.Day, n.Threshold)
	if ok, err := s.Claim(t.Context(), n); err != nil || !ok {
		t.Fatalf("Claim = %v, %v", ok, err)
	}
	waitFor(t, "the alert to be marked sent", func() bool { return state(t, s, key).Status == StatusSent })
	st := state(t, s, key)
	if st.Attempts != 3 || st.Permanent || !strings.Contains(st.LastError, "451") {
		t.Errorf("state = %+v; want 3 attempts, the 451 kept as last error, not permanent", st)
	}
	if c := messagesWithID(srv, key); c != 1 {
		t.Errorf("received %d copies, want 1", c)
	}
}

// TestDevModeWritesFile runs the Sender with the FileMailer, as the alerter
// does without SMTP_HOST.
func TestDevModeWritesFile(t *testing.T) {
	kv := newBuckets(t, 1)[0]
	f := NewFileMailer(filepath.Join(t.TempDir(), "mail"), nil)
	s := newTestSender(t, kv, f, nil, "dev")
	start(t, s)
	n := eightyPercent()
	if ok, err := s.Claim(t.Context(), n); err != nil || !ok {
		t.Fatalf("Claim = %v, %v", ok, err)
	}
	waitFor(t, "the alert to be marked sent", func() bool { return state(t, s, Key(n.Day, n.Threshold)).Status == StatusSent })
	raw, err := os.ReadFile(f.Path())
	if err != nil {
		t.Fatal(err)
	}
	if data := string(raw); !strings.Contains(data, "Subject: Tollgate: 80% of the daily budget used on 2026-12-03") {
		t.Errorf("mail file:\n%s", data)
	}
}

func TestBackoff(t *testing.T) {
	s := newTestSender(t, nil, nil, nil, "a") // 20ms..200ms
	tests := []struct {
		attempts  int
		permanent bool
		lo, hi    time.Duration
	}{
		{1, false, 10 * time.Millisecond, 20 * time.Millisecond},
		{2, false, 20 * time.Millisecond, 40 * time.Millisecond},
		{4, false, 80 * time.Millisecond, 160 * time.Millisecond},
		{5, false, 100 * time.Millisecond, 200 * time.Millisecond}, // capped
		{1000, false, 100 * time.Millisecond, 200 * time.Millisecond},
		{1, true, 100 * time.Millisecond, 200 * time.Millisecond}, // permanent: the slowest pace
	}
	for _, tt := range tests {
		for range 50 {
			if d := s.backoff(tt.attempts, tt.permanent); d < tt.lo || d > tt.hi {
				t.Fatalf("backoff(%d, %v) = %v, want in [%v, %v]", tt.attempts, tt.permanent, d, tt.lo, tt.hi)
			}
		}
	}
}

func TestNewSenderValidates(t *testing.T) {
	for _, cfg := range []SenderConfig{
		{From: testFrom},
		{To: testTo},
		{From: "not an address", To: testTo},
		{From: testFrom, To: testTo, MinBackoff: time.Minute, MaxBackoff: time.Second},
	} {
		if _, err := NewSender(nil, nil, cfg); err == nil {
			t.Errorf("NewSender(%+v): no error", cfg)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestLogger(buf *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
