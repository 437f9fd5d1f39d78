// Package smtptest runs a real SMTP server (emersion/go-smtp) on loopback
// for tests, recording what it accepts. It can be stopped and started
// again on the same port, to test a mail server that is down for a while.
package smtptest

import (
	"io"
	"log"
	"mime"
	"net"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
)

// Message is one accepted email.
type Message struct {
	From, To string
	Subject  string
	Data     string // the whole message as received
}

// Server is a running (or stopped) SMTP server.
type Server struct {
	t    testing.TB
	Host string
	Port int

	mu       sync.Mutex
	messages []Message
	srv      *smtp.Server
	ln       net.Listener
	served   chan struct{}
}

// Start starts a server on a random loopback port; it stops when the test
// ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, Host: "127.0.0.1"}
	s.listen("127.0.0.1:0")
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) listen(addr string) {
	s.t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatalf("smtptest: listening on %s: %v", addr, err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{s: s}, nil }))
	srv.Domain = "localhost"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	s.mu.Lock()
	s.Port, s.srv, s.ln, s.served = ln.Addr().(*net.TCPAddr).Port, srv, ln, served
	s.mu.Unlock()
}

// Stop stops serving; connections to the port are refused until Restart.
func (s *Server) Stop() {
	s.mu.Lock()
	srv, ln, served := s.srv, s.ln, s.served
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close() // closes the connections, and the listener once Serve has it
		ln.Close()  // in case Serve has not started yet
		<-served
	}
}

// Restart serves again on the same port.
func (s *Server) Restart() {
	s.t.Helper()
	s.listen(net.JoinHostPort(s.Host, strconv.Itoa(s.Port)))
}

// Messages returns what the server accepted so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.messages)
}

type session struct {
	s        *Server
	from, to string
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error { ss.from = from; return nil }
func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error   { ss.to = to; return nil }
func (ss *session) Reset()                                      { ss.from, ss.to = "", "" }
func (ss *session) Logout() error                               { return nil }
func (ss *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m := Message{From: ss.from, To: ss.to, Data: string(b)}
	if msg, err := mail.ReadMessage(strings.NewReader(m.Data)); err == nil {
		dec := new(mime.WordDecoder)
		if subj, err := dec.DecodeHeader(msg.Header.Get("Subject")); err == nil {
			m.Subject = subj
		}
	}
	ss.s.mu.Lock()
	ss.s.messages = append(ss.s.messages, m)
	ss.s.mu.Unlock()
	return nil
}
