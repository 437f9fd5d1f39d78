package alert

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net/mail"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Status is where an alert is in its life: pending until a mail server
// accepts it, then sent for good.
type Status string

// Alert statuses.
const (
	StatusPending Status = "pending"
	StatusSent    Status = "sent"
)

// State is the record of one alert, stored as JSON under [Key] in the
// `alerts` bucket. It is what the admin usage endpoint shows.
type State struct {
	Key       string  `json:"key"`
	Day       string  `json:"day"`
	Threshold float64 `json:"threshold"`
	Status    Status  `json:"status"`
	Attempts  int     `json:"attempts"`             // sends started, successful or not
	LastError string  `json:"last_error,omitempty"` // of the latest failed attempt
	// Permanent is set while the latest attempt was refused for good (5xx);
	// the alert is still retried, at the slowest pace.
	Permanent     bool      `json:"permanent"`
	ClaimedAt     time.Time `json:"claimed_at"`
	LastAttemptAt time.Time `json:"last_attempt_at,omitzero"`
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"` // no replica tries before this
	SentAt        time.Time `json:"sent_at,omitzero"`
	// LeaseOwner is sending the alert until LeaseUntil; no other replica
	// tries before then.
	LeaseOwner string    `json:"lease_owner,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	Notice     Notice    `json:"notice"`
}

// readyAt is when the alert may next be attempted: after any lease and any
// backoff.
func (s State) readyAt() time.Time {
	if s.LeaseUntil.After(s.NextAttemptAt) {
		return s.LeaseUntil
	}
	return s.NextAttemptAt
}

// SenderConfig configures a [Sender]. From and To are required; the rest
// has defaults.
type SenderConfig struct {
	From   string       // SMTP_FROM
	To     string       // ALERT_EMAIL
	Logger *slog.Logger // nil discards
	// Now is the clock for timestamps, leases and backoff; time.Now when
	// nil. Leases are compared across replicas, so it must be the wall
	// clock, possibly rounded or shifted, never a stopped one.
	Now        func() time.Time
	MinBackoff time.Duration // first retry delay; 1s when 0
	MaxBackoff time.Duration // cap on retry delays, and the pace of permanent failures; 5m when 0
	// Lease is how long a replica may spend on one attempt before another
	// may take over; 1m when 0. A send is abandoned after 3/4 of it.
	Lease time.Duration
	Owner string // names this replica in leases; host name and a random suffix when empty
}

// Sender claims alerts and delivers them. Any number of Senders, in any
// number of processes, may share one bucket: each alert is claimed once and
// sent by one of them at a time (see the package documentation for the
// guarantee).
type Sender struct {
	kv     jetstream.KeyValue
	mailer Mailer
	cfg    SenderConfig
	log    *slog.Logger
}

// NewSender returns a Sender that keeps alerts in kv (the `alerts` bucket)
// and delivers them with m.
func NewSender(kv jetstream.KeyValue, m Mailer, cfg SenderConfig) (*Sender, error) {
	if _, err := mail.ParseAddress(cfg.From); err != nil {
		return nil, fmt.Errorf("alert sender address %q: %w", cfg.From, err)
	}
	if _, err := mail.ParseAddress(cfg.To); err != nil {
		return nil, fmt.Errorf("alert recipient address %q: %w", cfg.To, err)
	}
	cfg.MinBackoff = cmp.Or(cfg.MinBackoff, time.Second)
	cfg.MaxBackoff = cmp.Or(cfg.MaxBackoff, 5*time.Minute)
	cfg.Lease = cmp.Or(cfg.Lease, time.Minute)
	if cfg.MinBackoff < 0 || cfg.MaxBackoff < cfg.MinBackoff || cfg.Lease < 0 {
		return nil, fmt.Errorf("alert backoff %v..%v, lease %v: want 0 < min <= max and a positive lease",
			cfg.MinBackoff, cfg.MaxBackoff, cfg.Lease)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Owner == "" {
		host, _ := os.Hostname()
		cfg.Owner = cmp.Or(host, "alerter") + "-" + rand.Text()[:8]
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Sender{kv: kv, mailer: m, cfg: cfg, log: logger.With("component", "alert", "owner", cfg.Owner)}, nil
}

// Claim records n as a pending alert, to be sent by [Sender.Run] here or on
// another replica. It reports false, with no error, if the alert for that
// day and threshold was already claimed, by anyone, ever.
func (s *Sender) Claim(ctx context.Context, n Notice) (bool, error) {
	if err := n.validate(); err != nil {
		return false, err
	}
	key := Key(n.Day, n.Threshold)
	st := State{
		Key:       key,
		Day:       n.Day,
		Threshold: n.Threshold,
		Status:    StatusPending,
		ClaimedAt: s.cfg.Now().UTC(),
		Notice:    n,
	}
	data, err := json.Marshal(st)
	if err != nil {
		return false, fmt.Errorf("encoding alert %s: %w", key, err)
	}
	if _, err := s.kv.Create(ctx, key, data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil
		}
		return false, fmt.Errorf("claiming alert %s: %w", key, err)
	}
	s.log.Info("alert claimed", "key", key, "spent", n.Spent, "budget", n.Budget, "exhausted", n.Exhausted)
	return true, nil
}

// List returns the alerts of a UTC day (YYYY-MM-DD), or of every day when
// day is empty, ordered by key.
func (s *Sender) List(ctx context.Context, day string) ([]State, error) {
	filter := jetstream.AllKeys
	if day != "" {
		if _, err := time.Parse(dayLayout, day); err != nil {
			return nil, fmt.Errorf("listing alerts: day %q is not YYYY-MM-DD", day)
		}
		filter = day + ".*"
	}
	w, err := s.kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("listing alerts: %w", err)
	}
	defer w.Stop()
	var out []State
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("listing alerts: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("listing alerts: watch ended early")
			}
			if e == nil { // all current values delivered
				slices.SortFunc(out, func(a, b State) int { return cmp.Compare(a.Key, b.Key) })
				return out, nil
			}
			st, err := decode(e)
			if err != nil {
				return nil, fmt.Errorf("listing alerts: %w", err)
			}
			out = append(out, st)
		}
	}
}

// Run delivers pending alerts until ctx ends, then returns nil once no send
// is in flight. It watches the whole bucket: the current values first, so
// alerts claimed before a restart, or left behind by a replica that died,
// are delivered, then every change.
func (s *Sender) Run(ctx context.Context) error {
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("watching alerts: %w", err)
	}
	defer w.Stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	workCtx, cancel := context.WithCancel(ctx)
	defer cancel() // runs before wg.Wait, so workers stop if Run fails

	workers := make(map[string]chan struct{}) // alert key → wakes its worker
	done := make(chan string)
	for {
		select {
		case <-ctx.Done():
			return nil
		case key := <-done:
			delete(workers, key)
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("watching alerts: watch ended")
			}
			if e == nil {
				continue // marker after the current values
			}
			if wake, ok := workers[e.Key()]; ok {
				select {
				case wake <- struct{}{}:
				default: // already woken
				}
				continue
			}
			st, err := decode(e)
			if err != nil {
				s.log.Error("skipping unreadable alert", "key", e.Key(), "error", err)
				continue
			}
			if st.Status != StatusPending {
				continue
			}
			wake := make(chan struct{}, 1)
			workers[e.Key()] = wake
			wg.Go(func() {
				s.deliver(workCtx, e.Key(), wake)
				select {
				case done <- e.Key():
				case <-workCtx.Done():
				}
			})
		}
	}
}

// deliver sends one alert, waiting for leases and backoff, until it is sent
// (by this replica or another) or ctx ends. wake signals a change of the
// alert's record.
func (s *Sender) deliver(ctx context.Context, key string, wake <-chan struct{}) {
	for {
		st, rev, err := s.get(ctx, key)
		switch {
		case ctx.Err() != nil, errors.Is(err, jetstream.ErrKeyNotFound):
			return
		case err != nil:
			s.log.Warn("reading alert", "key", key, "error", err)
			if !sleep(ctx, wake, s.cfg.MinBackoff) {
				return
			}
			continue
		case st.Status != StatusPending:
			return
		}
		if d := st.readyAt().Sub(s.cfg.Now()); d > 0 {
			if !sleep(ctx, wake, d) {
				return
			}
			continue
		}
		if err := s.attempt(ctx, st, rev); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("alert attempt", "key", key, "error", err)
			if !sleep(ctx, wake, s.cfg.MinBackoff) {
				return
			}
		}
	}
}

// attempt takes the lease on the alert (stored at revision rev), sends it
// and records the outcome. Losing the lease race is not an error: the caller
// re-reads the record and waits.
func (s *Sender) attempt(ctx context.Context, st State, rev uint64) error {
	now := s.cfg.Now().UTC()
	st.Attempts++
	st.LastAttemptAt = now
	st.LeaseOwner = s.cfg.Owner
	st.LeaseUntil = now.Add(s.cfg.Lease)
	// The lease is written without ctx's cancellation: a write abandoned by
	// shutdown could still be applied after the lease was released, leaving
	// it to block other replicas until it expires.
	lctx, cancel := outcomeContext(ctx, s.cfg.Lease)
	_, err := s.put(lctx, st, rev)
	cancel()
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil // another replica moved first
	}
	if err != nil {
		return fmt.Errorf("taking lease: %w", err)
	}

	sendErr := s.send(ctx, st.Notice) // fails at once if ctx has ended
	octx, cancel := outcomeContext(ctx, s.cfg.Lease)
	defer cancel()
	switch {
	case sendErr == nil:
		return s.markSent(octx, st.Key)
	case ctx.Err() != nil:
		s.log.Info("alert send interrupted by shutdown; releasing it", "key", st.Key, "error", sendErr)
		return s.recordFailure(octx, st.Key, nil)
	default:
		return s.recordFailure(octx, st.Key, sendErr)
	}
}

// outcomeContext is the context for writing a lease or the outcome of an
// attempt. These writes are made even if ctx has ended: a sent alert must be
// marked at once, and an unsent one handed back without waiting for its
// lease to expire. They are bounded by half a lease, so shutdown is never
// held long.
func outcomeContext(ctx context.Context, lease time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), lease/2)
}

// send renders and sends n, abandoning the attempt well before the lease
// ends so that no other replica can start while this one may still succeed.
func (s *Sender) send(ctx context.Context, n Notice) error {
	msg, err := Render(n, s.cfg.From, s.cfg.To)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Lease*3/4)
	defer cancel()
	return s.mailer.Send(ctx, msg)
}

// markSent records that the mail server accepted the alert. It retries until
// it succeeds or ctx ends, because until it does another replica may send
// the alert again once the lease expires.
func (s *Sender) markSent(ctx context.Context, key string) error {
	var (
		st      State
		already bool // another replica marked it first: the alert went out twice
	)
	err := retry(ctx, func() error {
		return s.update(ctx, key, func(cur *State) bool {
			already = cur.Status == StatusSent
			if already {
				return false
			}
			cur.Status = StatusSent
			cur.SentAt = s.cfg.Now().UTC()
			cur.Permanent = false
			cur.NextAttemptAt = time.Time{}
			cur.LeaseOwner, cur.LeaseUntil = "", time.Time{}
			st = *cur
			return true
		})
	})
	if err != nil {
		return fmt.Errorf("marking alert sent: %w", err)
	}
	if already {
		s.log.Warn("alert email sent more than once: a lease expired during a send", "key", key)
		return nil
	}
	s.log.Info("alert email sent", "key", key, "attempts", st.Attempts, "to", s.cfg.To)
	return nil
}

// recordFailure records a failed attempt, schedules the next one with
// backoff and releases the lease. With a nil sendErr (an attempt cut short
// by shutdown) it only releases the lease, so that another replica or the
// restarted process may try at once.
func (s *Sender) recordFailure(ctx context.Context, key string, sendErr error) error {
	permanent := Permanent(sendErr)
	var st State
	err := retry(ctx, func() error {
		return s.update(ctx, key, func(cur *State) bool {
			ours := cur.LeaseOwner == s.cfg.Owner
			if cur.Status != StatusPending || (sendErr == nil && !ours) {
				return false
			}
			if sendErr != nil {
				cur.LastError = sendErr.Error()
				cur.Permanent = permanent
				cur.NextAttemptAt = s.cfg.Now().UTC().Add(s.backoff(cur.Attempts, permanent))
			}
			if ours {
				cur.LeaseOwner, cur.LeaseUntil = "", time.Time{}
			}
			st = *cur
			return true
		})
	})
	if err != nil {
		return fmt.Errorf("recording failed attempt: %w", err)
	}
	if sendErr == nil || st.Key == "" {
		return nil
	}
	attrs := []any{"key", key, "attempts", st.Attempts, "error", sendErr, "next_attempt", st.NextAttemptAt}
	if permanent {
		s.log.Error("alert email refused permanently by the mail server; check SMTP_* and ALERT_EMAIL, "+
			"retrying at the slowest pace until it is delivered", attrs...)
	} else {
		s.log.Warn("alert email not sent; will retry", attrs...)
	}
	return nil
}

// backoff is the delay before the attempt after the given number of
// attempts: exponential from MinBackoff, capped at MaxBackoff, and always
// the cap for a permanent failure. Jitter (the upper half of the delay is
// random) keeps replicas and alerts from retrying in step.
func (s *Sender) backoff(attempts int, permanent bool) time.Duration {
	d := s.cfg.MaxBackoff
	if !permanent {
		d = s.cfg.MinBackoff
		for i := 1; i < attempts && d < s.cfg.MaxBackoff; i++ {
			d *= 2
		}
		d = min(d, s.cfg.MaxBackoff)
	}
	if d <= 1 {
		return d
	}
	return d/2 + mathrand.N(d/2)
}

// update applies change to the alert at key with compare-and-swap,
// re-reading and re-applying on conflict. change returns false to leave the
// record as it is.
func (s *Sender) update(ctx context.Context, key string, change func(*State) bool) error {
	for {
		st, rev, err := s.get(ctx, key)
		if err != nil {
			return err
		}
		if !change(&st) {
			return nil
		}
		_, err = s.put(ctx, st, rev)
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return err
		}
	}
}

func (s *Sender) get(ctx context.Context, key string) (State, uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if err != nil {
		return State{}, 0, fmt.Errorf("reading alert %s: %w", key, err)
	}
	st, err := decode(e)
	return st, e.Revision(), err
}

// put stores st if the alert is still at revision rev.
func (s *Sender) put(ctx context.Context, st State, rev uint64) (uint64, error) {
	data, err := json.Marshal(st)
	if err != nil {
		return 0, fmt.Errorf("encoding alert %s: %w", st.Key, err)
	}
	rev, err = s.kv.Update(ctx, st.Key, data, rev)
	if err != nil {
		return 0, fmt.Errorf("updating alert %s: %w", st.Key, err)
	}
	return rev, nil
}

func decode(e jetstream.KeyValueEntry) (State, error) {
	var st State
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return State{}, fmt.Errorf("decoding alert %s: %w", e.Key(), err)
	}
	st.Key = e.Key()
	return st, nil
}

// retry calls f until it succeeds or ctx ends.
func retry(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sleep waits for d, a wake-up or the end of ctx, and reports whether ctx
// is still live.
func sleep(ctx context.Context, wake <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-wake:
	case <-t.C:
	}
	return true
}
