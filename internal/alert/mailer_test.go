package alert

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gravitycar/tollgate/internal/pricing"
)

const (
	testFrom = "Tollgate <alerts@tollgate.example>"
	testTo   = "owner@example.com"
)

// eightyPercent is the notice of the day's spend reaching $0.80 of $1.00.
func eightyPercent() Notice {
	return Notice{
		Day:       "2026-12-03",
		Threshold: 0.8,
		Spent:     800_000_000,
		Reserved:  20_000_000,
		Budget:    pricing.NanosPerUSD,
		TopUsers: []Line{
			{Name: "auth0|alice", Spent: 500_000_000, Requests: 12},
			{Name: "bob@example.com", Spent: 300_000_000, Requests: 7},
		},
		TopModels: []Line{{Name: "gpt-4o-mini", Spent: 800_000_000, Requests: 19}},
		CrossedAt: time.Date(2026, 12, 3, 14, 5, 9, 0, time.UTC),
	}
}

func TestKey(t *testing.T) {
	tests := []struct {
		day       string
		threshold float64
		want      string
	}{
		{"2026-12-03", 1.0, "2026-12-03.t1000"},
		{"2026-12-03", 0.8, "2026-12-03.t0800"},
		{"2026-12-03", 0.825, "2026-12-03.t0825"},
		{"2026-01-31", 1.5, "2026-01-31.t1500"},
	}
	for _, tt := range tests {
		if got := Key(tt.day, tt.threshold); got != tt.want {
			t.Errorf("Key(%q, %v) = %q, want %q", tt.day, tt.threshold, got, tt.want)
		}
	}
}

func TestSMTPMailerSendsTextAndHTMLParts(t *testing.T) {
	srv := startSMTP(t)
	m, err := NewSMTPMailer(srv.config())
	if err != nil {
		t.Fatal(err)
	}
	msg, err := Render(eightyPercent(), testFrom, testTo)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Send(t.Context(), msg); err != nil {
		t.Fatalf("Send: %v", err)
	}

	got := srv.Received()
	if len(got) != 1 {
		t.Fatalf("server received %d messages, want 1", len(got))
	}
	if got[0].From != "alerts@tollgate.example" || len(got[0].To) != 1 || got[0].To[0] != testTo {
		t.Errorf("envelope from %q to %q, want alerts@tollgate.example to %s", got[0].From, got[0].To, testTo)
	}
	p := parseMessage(t, got[0].Data)
	if subj := p.Header.Get("Subject"); subj != "Tollgate: 80% of the daily budget used on 2026-12-03" {
		t.Errorf("Subject = %q", subj)
	}
	if id := p.Header.Get("Message-Id"); id != "<tollgate-alert.2026-12-03.t0800@tollgate.example>" {
		t.Errorf("Message-ID = %q", id)
	}
	wants := []string{"$0.80", "$1.00", "80%", "$0.02", "auth0|alice", "bob@example.com", "$0.50", "12",
		"gpt-4o-mini", "2026-12-03 14:05:09 UTC"}
	for _, mediaType := range []string{"text/plain", "text/html"} {
		body, ok := p.Parts[mediaType]
		if !ok {
			t.Fatalf("no %s part; parts: %v", mediaType, p.Parts)
		}
		for _, w := range wants {
			if !strings.Contains(body, w) {
				t.Errorf("%s part lacks %q:\n%s", mediaType, w, body)
			}
		}
	}
	if strings.Contains(p.Parts["text/plain"], "just under") {
		t.Errorf("80%% alert mentions exhaustion:\n%s", p.Parts["text/plain"])
	}
}

func TestRenderEscapesUserIDsInHTML(t *testing.T) {
	n := eightyPercent()
	hostile := `<script>alert("x")</script>`
	n.TopUsers = []Line{{Name: hostile, Spent: 1, Requests: 1}}
	msg, err := Render(n, testFrom, testTo)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(msg.HTML, "<script>") {
		t.Errorf("HTML part contains an unescaped <script>:\n%s", msg.HTML)
	}
	if !strings.Contains(msg.HTML, "&lt;script&gt;") {
		t.Errorf("HTML part lacks the escaped user id:\n%s", msg.HTML)
	}
	if !strings.Contains(msg.Text, hostile) {
		t.Errorf("text part should show the user id as is:\n%s", msg.Text)
	}
}

func TestRenderExhaustedJustUnderBudget(t *testing.T) {
	n := eightyPercent()
	n.Threshold, n.Exhausted = 1.0, true
	n.Spent, n.Reserved = 995_000_000, 10_000_000
	msg, err := Render(n, testFrom, testTo)
	if err != nil {
		t.Fatal(err)
	}
	if want := "Tollgate: daily budget exhausted on 2026-12-03 (100% threshold)"; msg.Subject != want {
		t.Errorf("Subject = %q, want %q", msg.Subject, want)
	}
	for _, body := range []string{msg.Text, msg.HTML} {
		for _, w := range []string{"refusing new queries", "$0.995", "just under the budget", "99%", "$0.01"} {
			if !strings.Contains(body, w) {
				t.Errorf("body lacks %q:\n%s", w, body)
			}
		}
	}

	n.Spent = pricing.NanosPerUSD + 1 // over the budget: nothing to explain
	msg, err = Render(n, testFrom, testTo)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(msg.Text, "just under") {
		t.Errorf("over-budget alert says just under:\n%s", msg.Text)
	}
}

func TestPercentages(t *testing.T) {
	tests := []struct {
		spent, budget pricing.Nanos
		want          string
	}{
		{800_000_000, 1_000_000_000, "80%"},
		{799_999_999, 1_000_000_000, "79%"}, // never rounds up to a threshold
		{1_500_000_000, 1_000_000_000, "150%"},
		{1, 0, "n/a"},
	}
	for _, tt := range tests {
		if got := percentUsed(tt.spent, tt.budget); got != tt.want {
			t.Errorf("percentUsed(%d, %d) = %q, want %q", tt.spent, tt.budget, got, tt.want)
		}
	}
	for threshold, want := range map[float64]string{0.8: "80%", 1: "100%", 0.825: "82.5%", 0.07: "7%"} {
		if got := percentOfThreshold(threshold); got != want {
			t.Errorf("percentOfThreshold(%v) = %q, want %q", threshold, got, want)
		}
	}
}

func TestPermanent(t *testing.T) {
	srv := startSMTP(t)
	m, err := NewSMTPMailer(srv.config())
	if err != nil {
		t.Fatal(err)
	}
	msg, err := Render(eightyPercent(), testFrom, testTo)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		code      int
		permanent bool
	}{{550, true}, {554, true}, {451, false}, {421, false}} {
		srv.Reject(tt.code, 1)
		err := m.Send(t.Context(), msg)
		if err == nil {
			t.Fatalf("Send with the server replying %d: no error", tt.code)
		}
		if got := Permanent(err); got != tt.permanent {
			t.Errorf("Permanent(%v) = %v, want %v", err, got, tt.permanent)
		}
	}
	if len(srv.Received()) != 0 {
		t.Errorf("server stored %d refused messages", len(srv.Received()))
	}

	srv.Stop()
	if err := m.Send(t.Context(), msg); err == nil || Permanent(err) {
		t.Errorf("Send to a stopped server: err = %v, Permanent = %v; want a temporary error", err, Permanent(err))
	}
	for _, err := range []error{
		nil,
		errors.New("550 looks like a code but is not a reply"),
		fmt.Errorf("dial failed: %w", &textproto.Error{Code: 421, Msg: "busy"}),
	} {
		if Permanent(err) {
			t.Errorf("Permanent(%v) = true", err)
		}
	}
	if err := fmt.Errorf("dial failed: %w", &textproto.Error{Code: 535, Msg: "auth failed"}); !Permanent(err) {
		t.Errorf("Permanent(%v) = false", err)
	}
}

// TestSMTPMailerHonoursContext sends to a server that accepts connections
// and never greets: Send must give up when its context ends, not after the
// 30s SMTP timeout.
func TestSMTPMailerHonoursContext(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		defer close(accepted)
		if c, err := l.Accept(); err == nil {
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		if c := <-accepted; c != nil {
			c.Close()
		}
	})
	port := l.Addr().(*net.TCPAddr).Port
	m, err := NewSMTPMailer(SMTPConfig{Host: "127.0.0.1", Port: port, TLS: TLSNone})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := Render(eightyPercent(), testFrom, testTo)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- m.Send(ctx, msg) }()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Send to a silent server succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Send did not return within 10s of its 200ms context deadline")
	}
}

func TestNewSMTPMailerValidates(t *testing.T) {
	for _, cfg := range []SMTPConfig{
		{},
		{Host: "mail.example.com", TLS: "sometimes"},
		{Host: "mail.example.com", Port: 70000},
	} {
		if _, err := NewSMTPMailer(cfg); err == nil {
			t.Errorf("NewSMTPMailer(%+v): no error", cfg)
		}
	}
	for _, tls := range []string{"", TLSMandatory, TLSOpportunistic, TLSNone} {
		if _, err := NewSMTPMailer(SMTPConfig{Host: "mail.example.com", TLS: tls, Username: "u", Password: "p"}); err != nil {
			t.Errorf("NewSMTPMailer with TLS %q: %v", tls, err)
		}
	}
}

// TestSMTPMailerMandatoryTLS checks that the default policy refuses to send
// in clear to a server without STARTTLS.
func TestSMTPMailerMandatoryTLS(t *testing.T) {
	srv := startSMTP(t)
	cfg := srv.config()
	cfg.TLS = ""
	m, err := NewSMTPMailer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := Render(eightyPercent(), testFrom, testTo)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Send(t.Context(), msg); err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Errorf("Send without STARTTLS under the mandatory policy: err = %v", err)
	}
	if n := len(srv.Received()); n != 0 {
		t.Errorf("server received %d messages in clear", n)
	}
}

func TestFileMailer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mail")
	var logs syncBuffer
	f := NewFileMailer(dir, newTestLogger(&logs))
	first, err := Render(eightyPercent(), testFrom, testTo)
	if err != nil {
		t.Fatal(err)
	}
	n := eightyPercent()
	n.Threshold = 1
	second, err := Render(n, testFrom, testTo)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []Message{first, second} {
		if err := f.Send(t.Context(), m); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	if f.Path() != filepath.Join(dir, "alerts.log") {
		t.Errorf("Path = %q", f.Path())
	}
	data, err := os.ReadFile(f.Path())
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, w := range []string{
		"To: " + testTo,
		"Subject: Tollgate: 80% of the daily budget used on 2026-12-03",
		"Subject: Tollgate: 100% of the daily budget used on 2026-12-03",
		"Spent:       $0.80 (80% of the budget)",
		"auth0|alice",
	} {
		if !strings.Contains(text, w) {
			t.Errorf("mail file lacks %q:\n%s", w, text)
		}
	}
	if got := strings.Count(text, "\n==== "); got != 1 || !strings.HasPrefix(text, "==== ") {
		t.Errorf("mail file should hold two blocks:\n%s", text)
	}
	if !strings.Contains(logs.String(), "80% of the daily budget") {
		t.Errorf("alert not logged:\n%s", logs.String())
	}
}
