// Package alert emails the owner when the day's spend crosses a threshold of
// the daily budget (80% and 100% by default), once per day and threshold.
//
// The alerter calls [Sender.Claim] when its ledger crosses a threshold: the
// claim is a kv.Create of the key [Key] in the `alerts` bucket, so of all the
// alerters that see the crossing, across replicas and restarts, exactly one
// claims it. [Sender.Run], on every alerter replica, watches the bucket and
// delivers each pending alert through a [Mailer]: an [SMTPMailer] in
// production, a [FileMailer] in development. Delivery is retried with
// exponential backoff until the mail server accepts the message; an alert is
// never dropped.
//
// # Delivery guarantee
//
// Before sending, a replica takes a lease on the alert with a
// compare-and-swap update, so two replicas never send the same alert at the
// same time, and it marks the alert sent (again with compare-and-swap) as
// soon as the server has accepted the message. A replica that dies mid-send
// leaves its lease to expire, after which another replica, or the restarted
// one, sends the alert. This makes delivery at-least-once in one narrow
// window: a crash (or a NATS outage longer than the lease) after the SMTP
// server accepted the message and before the alert is marked sent. The
// window is kept small (the mark is written right after the server's reply,
// even during shutdown), and every copy carries the same Message-ID so mail
// clients can fold a duplicate.
package alert

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"math"
	"math/big"
	"net/mail"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gravitycar/tollgate/internal/pricing"
)

// ErrInvalidNotice is returned when a [Notice] cannot be claimed: its day is
// not a YYYY-MM-DD date or its threshold is not a positive fraction.
var ErrInvalidNotice = errors.New("invalid alert notice")

// dayLayout is the format of Notice.Day: a UTC calendar day.
const dayLayout = "2006-01-02"

// Notice is everything a threshold email says. It is stored with the alert
// when it is claimed, so that whichever replica sends it, however much later,
// sends the figures of the moment of crossing.
type Notice struct {
	Day       string        `json:"day"`       // UTC day, YYYY-MM-DD
	Threshold float64       `json:"threshold"` // fraction of the budget: 0.8, 1.0
	Spent     pricing.Nanos `json:"spent"`     // settled spend of the day
	Reserved  pricing.Nanos `json:"reserved"`  // held for queries in flight, not yet settled
	Budget    pricing.Nanos `json:"budget"`    // DAILY_BUDGET_USD
	// Exhausted is set when the api started refusing queries for budget. The
	// 100% alert may be sent for that reason while settled spend is still just
	// under the budget (reservations made up the rest); the email says so.
	Exhausted bool      `json:"exhausted"`
	TopUsers  []Line    `json:"top_users,omitempty"`
	TopModels []Line    `json:"top_models,omitempty"`
	CrossedAt time.Time `json:"crossed_at"`
}

// Line is one row of a top-spenders table: a user or a model.
type Line struct {
	Name     string        `json:"name"`
	Spent    pricing.Nanos `json:"spent"`
	Requests int           `json:"requests"`
}

// validate reports whether n can be claimed and keyed.
func (n Notice) validate() error {
	if _, err := time.Parse(dayLayout, n.Day); err != nil {
		return fmt.Errorf("%w: day %q is not YYYY-MM-DD", ErrInvalidNotice, n.Day)
	}
	if math.IsNaN(n.Threshold) || math.IsInf(n.Threshold, 0) || permille(n.Threshold) <= 0 {
		return fmt.Errorf("%w: threshold %v is not a positive fraction of the budget", ErrInvalidNotice, n.Threshold)
	}
	return nil
}

// Key is the key of the alert for a day and threshold in the `alerts`
// bucket, with the threshold in permille: Key("2026-12-03", 1.0) is
// "2026-12-03.t1000" and Key("2026-12-03", 0.8) is "2026-12-03.t0800".
func Key(day string, threshold float64) string {
	return fmt.Sprintf("%s.t%04d", day, permille(threshold))
}

// permille is a threshold in thousandths, rounded: 0.8 is 800.
func permille(threshold float64) int64 {
	return int64(math.Round(threshold * 1000))
}

// Message is a rendered email.
type Message struct {
	From, To  string
	Subject   string
	Text      string // text/plain part
	HTML      string // text/html part
	MessageID string // without angle brackets; the same for every copy of one alert
}

// Render writes the email for n from and to the given addresses. The HTML
// part is produced by html/template, so user ids and model names are escaped.
func Render(n Notice, from, to string) (Message, error) {
	v := newView(n)
	tmpl, err := template.New("alert").Parse(htmlSource)
	if err != nil {
		return Message{}, fmt.Errorf("parsing HTML template: %w", err)
	}
	var html bytes.Buffer
	if err := tmpl.Execute(&html, v); err != nil {
		return Message{}, fmt.Errorf("rendering HTML part of alert %s: %w", Key(n.Day, n.Threshold), err)
	}
	return Message{
		From:      from,
		To:        to,
		Subject:   v.Subject,
		Text:      renderText(v),
		HTML:      html.String(),
		MessageID: "tollgate-alert." + Key(n.Day, n.Threshold) + "@" + domainOf(from),
	}, nil
}

// view holds the figures of a Notice formatted for both parts of the email.
type view struct {
	Subject, Headline, Note string
	Day, Threshold, Used    string
	Spent, Reserved, Budget string
	CrossedAt               string
	Tables                  []tableView // top users, then top models
}

type tableView struct {
	Title string
	Lines []lineView
}

type lineView struct {
	Name, Spent string
	Requests    int
}

func newView(n Notice) view {
	v := view{
		Day:       n.Day,
		Threshold: percentOfThreshold(n.Threshold),
		Used:      percentUsed(n.Spent, n.Budget),
		Spent:     n.Spent.String(),
		Reserved:  n.Reserved.String(),
		Budget:    n.Budget.String(),
		CrossedAt: "unknown",
		Tables: []tableView{
			{Title: "Top users", Lines: lineViews(n.TopUsers)},
			{Title: "Top models", Lines: lineViews(n.TopModels)},
		},
	}
	if !n.CrossedAt.IsZero() {
		v.CrossedAt = n.CrossedAt.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	if n.Exhausted {
		v.Subject = fmt.Sprintf("Tollgate: daily budget exhausted on %s (%s threshold)", n.Day, v.Threshold)
		v.Headline = "The daily budget is exhausted: the api is refusing new queries until the budget resets at 00:00 UTC."
		if n.Spent < n.Budget {
			v.Note = fmt.Sprintf("Settled spend (%s) is just under the budget (%s): the api refuses once settled spend "+
				"plus what is reserved for queries in flight (%s) reaches the budget.", v.Spent, v.Budget, v.Reserved)
		}
	} else {
		v.Subject = fmt.Sprintf("Tollgate: %s of the daily budget used on %s", v.Threshold, n.Day)
		v.Headline = fmt.Sprintf("The day's spend has crossed %s of the daily budget.", v.Threshold)
	}
	return v
}

func lineViews(lines []Line) []lineView {
	out := make([]lineView, len(lines))
	for i, l := range lines {
		out[i] = lineView{Name: l.Name, Spent: l.Spent.String(), Requests: l.Requests}
	}
	return out
}

// percentOfThreshold formats a threshold as a percentage: "80%", "82.5%".
func percentOfThreshold(threshold float64) string {
	p := permille(threshold)
	if p%10 == 0 {
		return fmt.Sprintf("%d%%", p/10)
	}
	return fmt.Sprintf("%d.%d%%", p/10, p%10)
}

// percentUsed is spent as a whole percentage of budget, rounded down so that
// a spend just under a threshold never reads as having reached it.
func percentUsed(spent, budget pricing.Nanos) string {
	if budget <= 0 {
		return "n/a"
	}
	q := new(big.Int).Mul(big.NewInt(int64(spent)), big.NewInt(100))
	q.Quo(q, big.NewInt(int64(budget)))
	return q.String() + "%"
}

// domainOf is the domain of an email address, for the Message-ID.
func domainOf(address string) string {
	if a, err := mail.ParseAddress(address); err == nil {
		if i := strings.LastIndexByte(a.Address, '@'); i >= 0 && i < len(a.Address)-1 {
			return a.Address[i+1:]
		}
	}
	return "localhost"
}

// renderText writes the text/plain part, with the tables aligned.
func renderText(v view) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Tollgate budget alert for %s (UTC)\n\n%s\n", v.Day, v.Headline)
	if v.Note != "" {
		fmt.Fprintf(&b, "\n%s\n", v.Note)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Spent:\t%s (%s of the budget)\n", v.Spent, v.Used)
	fmt.Fprintf(tw, "Reserved:\t%s (queries in flight, not yet settled)\n", v.Reserved)
	fmt.Fprintf(tw, "Budget:\t%s\n", v.Budget)
	fmt.Fprintf(tw, "Threshold:\t%s\n", v.Threshold)
	fmt.Fprintf(tw, "Crossed at:\t%s\n", v.CrossedAt)
	tw.Flush()
	for _, t := range v.Tables {
		fmt.Fprintf(&b, "\n%s:\n", t.Title)
		if len(t.Lines) == 0 {
			b.WriteString("  (none)\n")
			continue
		}
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, l := range t.Lines {
			fmt.Fprintf(tw, "  %s\t%s\t%d requests\n", l.Name, l.Spent, l.Requests)
		}
		tw.Flush()
	}
	return b.String()
}

const htmlSource = `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>{{.Subject}}</title></head>
<body style="font-family: sans-serif">
<h2>Tollgate budget alert for {{.Day}} (UTC)</h2>
<p><strong>{{.Headline}}</strong></p>
{{- if .Note}}
<p>{{.Note}}</p>
{{- end}}
<table cellpadding="4">
<tr><th align="left">Spent</th><td>{{.Spent}} ({{.Used}} of the budget)</td></tr>
<tr><th align="left">Reserved</th><td>{{.Reserved}} (queries in flight, not yet settled)</td></tr>
<tr><th align="left">Budget</th><td>{{.Budget}}</td></tr>
<tr><th align="left">Threshold</th><td>{{.Threshold}}</td></tr>
<tr><th align="left">Crossed at</th><td>{{.CrossedAt}}</td></tr>
</table>
{{- range .Tables}}
<h3>{{.Title}}</h3>
{{- if .Lines}}
<table cellpadding="4">
<tr><th align="left">Name</th><th align="right">Spent</th><th align="right">Requests</th></tr>
{{- range .Lines}}
<tr><td>{{.Name}}</td><td align="right">{{.Spent}}</td><td align="right">{{.Requests}}</td></tr>
{{- end}}
</table>
{{- else}}
<p>(none)</p>
{{- end}}
{{- end}}
</body>
</html>
`
