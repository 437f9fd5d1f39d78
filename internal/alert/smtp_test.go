package alert

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"net"
	netmail "net/mail"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
)

// smtpServer is a real SMTP server on loopback (emersion/go-smtp) that
// records the messages it accepts. It can refuse MAIL FROM with a chosen
// reply, and be stopped and started again; a restart gets a new port, and
// Mailer always points at the current one.
type smtpServer struct {
	t *testing.T

	mu         sync.Mutex
	received   []received
	mails      int // MAIL FROM commands seen, accepted or not
	rejectCode int // refuse MAIL FROM with this code while rejectLeft != 0
	rejectLeft int // <0: until told otherwise
	addr       string
	srv        *smtp.Server
	listener   net.Listener
	served     chan struct{} // closed when Serve returns
}

// received is one accepted message.
type received struct {
	From string
	To   []string
	Data []byte
}

func startSMTP(t *testing.T) *smtpServer {
	t.Helper()
	s := &smtpServer{t: t}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start listens on a new loopback port and serves.
func (s *smtpServer) Start() {
	s.t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatalf("listening for SMTP: %v", err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &session{srv: s}, nil
	}))
	srv.Domain = "localhost"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(l) // returns nil once closed
	}()
	s.mu.Lock()
	s.addr, s.srv, s.listener, s.served = l.Addr().String(), srv, l, served
	s.mu.Unlock()
}

// Stop closes the listener and every connection. The address keeps
// refusing connections until Start.
func (s *smtpServer) Stop() {
	s.mu.Lock()
	srv, l, served := s.srv, s.listener, s.served
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close() // closes the connections, and the listener if Serve has registered it
	_ = l.Close()   // in case it has not yet
	<-served
}

// Reject makes the next n MAIL FROM commands fail with code (4xx or 5xx);
// n < 0 means until Reject(0, 0).
func (s *smtpServer) Reject(code, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejectCode, s.rejectLeft = code, n
}

func (s *smtpServer) Received() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.received)
}

func (s *smtpServer) Mails() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mails
}

func (s *smtpServer) config() SMTPConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	host, port, _ := net.SplitHostPort(s.addr)
	p, _ := net.LookupPort("tcp", port)
	return SMTPConfig{Host: host, Port: p, TLS: TLSNone}
}

// Mailer is an SMTPMailer for the server's current address.
func (s *smtpServer) Mailer() Mailer {
	return mailerFunc(func(ctx context.Context, m Message) error {
		sm, err := NewSMTPMailer(s.config())
		if err != nil {
			return err
		}
		return sm.Send(ctx, m)
	})
}

type mailerFunc func(ctx context.Context, m Message) error

func (f mailerFunc) Send(ctx context.Context, m Message) error { return f(ctx, m) }

type session struct {
	srv  *smtpServer
	from string
	to   []string
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	s.srv.mails++
	if s.srv.rejectLeft != 0 {
		if s.srv.rejectLeft > 0 {
			s.srv.rejectLeft--
		}
		return &smtp.SMTPError{
			Code:         s.srv.rejectCode,
			EnhancedCode: smtp.EnhancedCode{s.srv.rejectCode / 100, 7, 1},
			Message:      "test server refuses this sender",
		}
	}
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	s.srv.received = append(s.srv.received, received{From: s.from, To: s.to, Data: data})
	return nil
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }

// parsed is a received email taken apart with net/mail and mime/multipart.
type parsed struct {
	Header netmail.Header
	Parts  map[string]string // decoded body by media type: text/plain, text/html
}

func parseMessage(t *testing.T, data []byte) parsed {
	t.Helper()
	msg, err := netmail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("parsing message: %v\n%s", err, data)
	}
	p := parsed{Header: msg.Header, Parts: map[string]string{}}
	if err := collectParts(msg.Header.Get("Content-Type"), msg.Body, p.Parts); err != nil {
		t.Fatalf("parsing MIME parts: %v\n%s", err, data)
	}
	return p
}

// collectParts walks a (possibly nested) multipart body. multipart.Reader
// decodes quoted-printable parts itself.
func collectParts(contentType string, body io.Reader, into map[string]string) error {
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(mediaType, "multipart/") {
		b, err := io.ReadAll(body)
		into[mediaType] = string(b)
		return err
	}
	mr := multipart.NewReader(body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := collectParts(part.Header.Get("Content-Type"), part, into); err != nil {
			return err
		}
	}
}
