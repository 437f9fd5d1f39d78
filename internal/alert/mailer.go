package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wneessen/go-mail"
)

// Mailer delivers one rendered email. Send honours ctx: it returns by the
// time ctx ends. An error for which [Permanent] reports true means the mail
// server refused the message for good (a 5xx reply).
type Mailer interface {
	Send(ctx context.Context, m Message) error
}

// SMTP_TLS values: how an [SMTPMailer] uses STARTTLS.
const (
	TLSMandatory     = "mandatory"     // refuse to send unless the server offers STARTTLS
	TLSOpportunistic = "opportunistic" // use STARTTLS when the server offers it
	TLSNone          = "none"          // plain SMTP, for a relay on localhost or tests
)

// DefaultSMTPPort is the submission port used when SMTPConfig.Port is 0.
const DefaultSMTPPort = 587

// SMTPConfig says how to reach the mail server (SMTP_* variables).
type SMTPConfig struct {
	Host               string
	Port               int // DefaultSMTPPort when 0
	Username, Password string
	TLS                string        // TLSMandatory (when empty), TLSOpportunistic or TLSNone
	Timeout            time.Duration // per SMTP command; 30s when 0
}

// SMTPMailer sends email through an SMTP server with go-mail, on a new
// connection for each message. It is safe for concurrent use.
type SMTPMailer struct {
	host string
	opts []mail.Option
}

// NewSMTPMailer checks cfg and returns a mailer for it. It does not connect.
func NewSMTPMailer(cfg SMTPConfig) (*SMTPMailer, error) {
	if cfg.Host == "" {
		return nil, errors.New("SMTP host is empty")
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultSMTPPort
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("SMTP port %d: must be between 1 and 65535", cfg.Port)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	var policy mail.TLSPolicy
	switch cfg.TLS {
	case TLSMandatory, "":
		policy = mail.TLSMandatory
	case TLSOpportunistic:
		policy = mail.TLSOpportunistic
	case TLSNone:
		policy = mail.NoTLS
	default:
		return nil, fmt.Errorf("SMTP TLS mode %q: want %s, %s or %s", cfg.TLS, TLSMandatory, TLSOpportunistic, TLSNone)
	}
	opts := []mail.Option{
		mail.WithPort(cfg.Port),
		mail.WithTLSPolicy(policy),
		mail.WithTimeout(cfg.Timeout),
	}
	if cfg.Username != "" {
		opts = append(opts,
			mail.WithSMTPAuth(mail.SMTPAuthAutoDiscover),
			mail.WithUsername(cfg.Username),
			mail.WithPassword(cfg.Password),
		)
	}
	return &SMTPMailer{host: cfg.Host, opts: opts}, nil
}

// Send delivers m. Once the server has accepted the message, Send reports
// success even if closing the session fails, so that the message is not
// sent twice.
func (s *SMTPMailer) Send(ctx context.Context, m Message) error {
	msg, err := buildMsg(m)
	if err != nil {
		return err
	}
	var d ctxDialer
	defer d.closeAll()
	client, err := mail.NewClient(s.host, append(slices.Clip(s.opts), mail.WithDialContextFunc(d.dialer(ctx)))...)
	if err != nil {
		return fmt.Errorf("configuring SMTP client: %w", err)
	}
	err = client.DialAndSendWithContext(ctx, msg)
	if err != nil && !msg.IsDelivered() {
		return fmt.Errorf("sending email through %s: %w", client.ServerAddr(), err)
	}
	return nil
}

// buildMsg turns m into a go-mail message with a text and an HTML part.
func buildMsg(m Message) (*mail.Msg, error) {
	msg := mail.NewMsg()
	if err := msg.From(m.From); err != nil {
		return nil, fmt.Errorf("setting sender %q: %w", m.From, err)
	}
	if err := msg.To(m.To); err != nil {
		return nil, fmt.Errorf("setting recipient %q: %w", m.To, err)
	}
	msg.Subject(m.Subject)
	msg.SetDate()
	if m.MessageID != "" {
		msg.SetMessageIDWithValue(m.MessageID)
	} else {
		msg.SetMessageID()
	}
	msg.SetBodyString(mail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(mail.TypeTextHTML, m.HTML)
	}
	return msg, nil
}

// ctxDialer dials the SMTP connections of one Send. go-mail bounds only the
// dial by the context; ctxDialer also closes the connection when the
// context ends, so a slow server cannot hold a Send past its deadline, and
// closes every connection when the Send is over, whatever go-mail did.
type ctxDialer struct {
	conns []net.Conn
	stops []func() bool
}

func (d *ctxDialer) dialer(ctx context.Context) mail.DialContextFunc {
	return func(dialCtx context.Context, network, addr string) (net.Conn, error) {
		var nd net.Dialer
		c, err := nd.DialContext(dialCtx, network, addr)
		if err != nil {
			return nil, err
		}
		d.conns = append(d.conns, c)
		d.stops = append(d.stops, context.AfterFunc(ctx, func() { c.Close() }))
		return c, nil
	}
}

func (d *ctxDialer) closeAll() {
	for _, stop := range d.stops {
		stop()
	}
	for _, c := range d.conns {
		c.Close() // usually closed already by QUIT; the error says nothing new
	}
}

// Permanent reports whether err is a permanent refusal from the mail server:
// a 5xx reply, such as an unknown recipient, a rejected sender or failed
// authentication. Retrying will not help until the configuration changes.
func Permanent(err error) bool {
	var sendErr *mail.SendError
	if errors.As(err, &sendErr) && sendErr.ErrorCode() != 0 {
		return sendErr.ErrorCode() >= 500
	}
	var protoErr *textproto.Error
	return errors.As(err, &protoErr) && protoErr.Code >= 500
}

// FileMailer is the development [Mailer], used when no SMTP server is
// configured: it writes each email to the log and appends it, as one
// readable block, to alerts.log in its directory.
type FileMailer struct {
	path   string
	logger *slog.Logger
	mu     sync.Mutex // serialises appends
}

// NewFileMailer returns a mailer writing to dir/alerts.log (typically
// DATA_DIR/mail). The directory is created on the first Send.
func NewFileMailer(dir string, logger *slog.Logger) *FileMailer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &FileMailer{path: filepath.Join(dir, "alerts.log"), logger: logger}
}

// Path is the file the mailer appends to.
func (f *FileMailer) Path() string { return f.path }

// Send logs m and appends it to the file.
func (f *FileMailer) Send(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.logger.Info("alert email (no SMTP_HOST: written to file)",
		"to", m.To, "subject", m.Subject, "file", f.path, "text", m.Text)

	var b strings.Builder
	fmt.Fprintf(&b, "==== %s ====\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "From: %s\nTo: %s\nSubject: %s\nMessage-ID: <%s>\n\n", m.From, m.To, m.Subject, m.MessageID)
	b.WriteString(strings.TrimRight(m.Text, "\n"))
	b.WriteString("\n\n")

	f.mu.Lock()
	defer f.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(f.path), 0o750); err != nil {
		return fmt.Errorf("creating mail directory: %w", err)
	}
	file, err := os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("opening mail file: %w", err)
	}
	if _, err := file.WriteString(b.String()); err != nil {
		file.Close()
		return fmt.Errorf("writing mail file: %w", err)
	}
	if err := file.Close(); err != nil {
		return fmt.Errorf("closing mail file: %w", err)
	}
	return nil
}
