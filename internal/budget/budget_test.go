package budget_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/gravitycar/tollgate/internal/budget"
	"github.com/gravitycar/tollgate/internal/natstest"
	"github.com/gravitycar/tollgate/internal/pricing"
	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type env struct {
	js jetstream.JetStream
	kv jetstream.KeyValue
}

func newEnv(t *testing.T, dupeWindow time.Duration) *env {
	t.Helper()
	js, err := jetstream.New(natstest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	l := queue.Layout{DupeWindow: dupeWindow}
	if err := queue.EnsureStreams(t.Context(), js, l, queue.UsageStream); err != nil {
		t.Fatal(err)
	}
	kvs, err := queue.EnsureBuckets(t.Context(), js, l, queue.BudgetBucket)
	if err != nil {
		t.Fatal(err)
	}
	return &env{js: js, kv: kvs[queue.BudgetBucket]}
}

func (e *env) publish(t *testing.T, ev queue.UsageEvent, msgID string) {
	t.Helper()
	b, _ := json.Marshal(ev)
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := e.js.PublishMsg(t.Context(), &nats.Msg{Subject: queue.UsageSubject, Data: b}, opts...); err != nil {
		t.Fatal(err)
	}
}

func (e *env) day(t *testing.T, day string) budget.Day {
	t.Helper()
	var d budget.Day
	en, err := e.kv.Get(t.Context(), budget.DayKey(day))
	if err != nil {
		t.Fatalf("day %s: %v", day, err)
	}
	json.Unmarshal(en.Value(), &d)
	return d
}

func (e *env) user(t *testing.T, day, user string) budget.UserDay {
	t.Helper()
	var u budget.UserDay
	en, err := e.kv.Get(t.Context(), budget.UserKey(day, user))
	if err != nil {
		t.Fatalf("user %s on %s: %v", user, day, err)
	}
	json.Unmarshal(en.Value(), &u)
	return u
}

// follow runs a ledger follower until stop is called.
func follow(t *testing.T, e *env, applied func([]budget.Event)) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := budget.NewLedger(e.kv, pricing.Default(), nil, time.Now)
	done := make(chan error, 1)
	go func() { done <- l.Follow(ctx, e.js, budget.FollowOptions{MaxBatch: 37, Applied: applied}) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Follow: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// expected is the exact ledger that a set of distinct events must produce.
type expected struct {
	spent    map[string]pricing.Nanos // by day
	requests map[string]int
	byModel  map[string]map[string]pricing.Nanos // day → model
	byUser   map[string]map[string]pricing.Nanos // day → user
}

func makeEvents(t *testing.T, n int, days []time.Time) ([]queue.UsageEvent, expected) {
	t.Helper()
	models := []string{"gpt-4o-mini", "gpt-4o", "gpt-4.1-nano"}
	users := []string{"auth0|alice", "bob@example.com", "carol", "dåve ünïcode"}
	rnd := rand.New(rand.NewPCG(1, 2))
	exp := expected{map[string]pricing.Nanos{}, map[string]int{}, map[string]map[string]pricing.Nanos{}, map[string]map[string]pricing.Nanos{}}
	prices := pricing.Default()
	var evs []queue.UsageEvent
	for i := range n {
		at := days[i%len(days)].Add(time.Duration(i) * time.Millisecond)
		prompt := 100 + rnd.IntN(3000)
		ev := queue.UsageEvent{
			RequestID:          query.NewID(at),
			User:               users[rnd.IntN(len(users))],
			Model:              models[rnd.IntN(len(models))],
			PromptTokens:       prompt,
			CachedPromptTokens: rnd.IntN(prompt),
			CompletionTokens:   rnd.IntN(500),
			CompletedAt:        at.Add(2 * time.Second),
		}
		evs = append(evs, ev)
		cost, err := prices.Cost(ev.Model, ev.PromptTokens, ev.CachedPromptTokens, ev.CompletionTokens)
		if err != nil {
			t.Fatal(err)
		}
		day := at.UTC().Format(time.DateOnly)
		exp.spent[day] += cost
		exp.requests[day]++
		if exp.byModel[day] == nil {
			exp.byModel[day], exp.byUser[day] = map[string]pricing.Nanos{}, map[string]pricing.Nanos{}
		}
		exp.byModel[day][ev.Model] += cost
		exp.byUser[day][ev.User] += cost
	}
	return evs, exp
}

func (e *env) check(t *testing.T, exp expected) {
	t.Helper()
	for day, spent := range exp.spent {
		d := e.day(t, day)
		if d.Spent != spent || d.Totals.Requests != exp.requests[day] {
			t.Errorf("%s: spent %v over %d requests, want %v over %d", day, d.Spent, d.Totals.Requests, spent, exp.requests[day])
		}
		for model, want := range exp.byModel[day] {
			if got := d.ByModel[model]; got == nil || got.Spent != want {
				t.Errorf("%s model %s: %+v, want %v", day, model, got, want)
			}
		}
		for user, want := range exp.byUser[day] {
			if got := e.user(t, day, user); got.Spent != want || got.User != user {
				t.Errorf("%s user %q: %+v, want %v", day, user, got, want)
			}
		}
	}
}

func waitApplied(t *testing.T, e *env, lastSeq func() uint64) {
	t.Helper()
	l := budget.NewLedger(e.kv, pricing.Default(), nil, time.Now)
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := l.Cursor(t.Context())
		if err == nil && c >= lastSeq() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ledger cursor %d, stream at %d", c, lastSeq())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) lastSeq(t *testing.T) func() uint64 {
	return func() uint64 {
		s, err := e.js.Stream(t.Context(), queue.UsageStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
}

// TestLedgerExactlyOnce: 1,000 events across two days, 10% published again
// (some inside the duplicate window, some after it), the follower killed
// and restarted mid-way, then a second follower racing the first.
func TestLedgerExactlyOnce(t *testing.T) {
	const window = 300 * time.Millisecond
	e := newEnv(t, window)
	d1 := time.Date(2026, 12, 2, 23, 59, 0, 0, time.UTC)
	d2 := time.Date(2026, 12, 3, 0, 1, 0, 0, time.UTC)
	evs, exp := makeEvents(t, 1000, []time.Time{d1, d2})

	var appliedN sync.Map
	stop := follow(t, e, func(b []budget.Event) { appliedN.Store(b[len(b)-1].Seq, true) })
	var late []queue.UsageEvent
	for i, ev := range evs {
		e.publish(t, ev, ev.RequestID)
		switch {
		case i%20 == 0: // duplicate inside the window: the stream drops it
			e.publish(t, ev, ev.RequestID)
		case i%20 == 10: // duplicate beyond the window: the ledger must drop it
			late = append(late, ev)
		}
		if i == 400 {
			stop() // the alerter dies mid-way...
			stop = follow(t, e, nil)
		}
	}
	// Beyond the window: republish until the stream stores it again.
	for _, ev := range late {
		before := e.lastSeq(t)()
		for e.lastSeq(t)() == before {
			e.publish(t, ev, ev.RequestID)
			time.Sleep(window / 10) // pacing while the window passes
		}
	}
	second := follow(t, e, nil) // ...and a second alerter joins
	waitApplied(t, e, e.lastSeq(t))
	stop()
	second()
	e.check(t, exp)

	// Replaying everything from the start changes nothing.
	l := budget.NewLedger(e.kv, pricing.Default(), nil, time.Now)
	var all []budget.Event
	s, _ := e.js.Stream(t.Context(), queue.UsageStream)
	for seq := uint64(1); seq <= e.lastSeq(t)(); seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		var u queue.UsageEvent
		json.Unmarshal(m.Data, &u)
		all = append(all, budget.Event{Seq: seq, Usage: u})
	}
	if err := l.Apply(t.Context(), all); err != nil {
		t.Fatal(err)
	}
	e.check(t, exp)

	// A rebuild from the stream agrees with the ledger, to the nano-dollar.
	for _, day := range []string{"2026-12-02", "2026-12-03"} {
		rc, err := l.Rebuild(t.Context(), e.js, day)
		if err != nil {
			t.Fatal(err)
		}
		if rc.Day.Spent != exp.spent[day] || rc.Events != exp.requests[day] {
			t.Fatalf("rebuild %s: %v over %d events, want %v over %d", day, rc.Day.Spent, rc.Events, exp.spent[day], exp.requests[day])
		}
		diffs, err := l.Diff(t.Context(), rc)
		if err != nil || len(diffs) != 0 {
			t.Fatalf("rebuild %s differs from the ledger: %v %v", day, diffs, err)
		}
	}
	// And it notices a ledger that was tampered with.
	en, _ := e.kv.Get(t.Context(), budget.DayKey("2026-12-03"))
	var d budget.Day
	json.Unmarshal(en.Value(), &d)
	d.Spent++
	b, _ := json.Marshal(d)
	e.kv.Put(t.Context(), budget.DayKey("2026-12-03"), b)
	rc, _ := l.Rebuild(t.Context(), e.js, "2026-12-03")
	if diffs, _ := l.Diff(t.Context(), rc); len(diffs) != 1 {
		t.Fatalf("diffs after tampering: %v, want one (spent)", diffs)
	}
}

func TestReserveNeverOvershoots(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	ctx := t.Context()
	const hold = 10 * pricing.NanosPerUSD / 1000 // $0.01
	now := time.Now
	// Two api replicas, each with its own guard and watch.
	var guards []*budget.Guard
	for range 2 {
		g := budget.NewGuard(e.kv, 5*hold, nil, now)
		gctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); g.Run(gctx) }()
		t.Cleanup(func() { cancel(); <-done })
		<-g.Ready()
		guards = append(guards, g)
	}
	var mu sync.Mutex
	var admitted []string
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 200 {
		wg.Go(func() {
			<-start
			id := query.NewID(time.Now())
			err := guards[i%2].Reserve(ctx, id, hold, time.Hour)
			if err == nil {
				mu.Lock()
				admitted = append(admitted, id)
				mu.Unlock()
			} else if err != budget.ErrExhausted {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(admitted) != 5 {
		t.Fatalf("%d reservations of $0.01 admitted within a $0.05 budget, want exactly 5", len(admitted))
	}
	today := budget.Today(time.Now())
	d := e.day(t, today)
	if d.Reserved(time.Now()) != 5*hold || d.ExhaustedAt == nil {
		t.Fatalf("reserved %v, exhausted at %v", d.Reserved(time.Now()), d.ExhaustedAt)
	}

	// Settling replaces each hold with the real (smaller) cost.
	l := budget.NewLedger(e.kv, pricing.Default(), nil, time.Now)
	var evs []budget.Event
	for i, id := range admitted {
		evs = append(evs, budget.Event{Seq: uint64(i + 1), Usage: queue.UsageEvent{
			RequestID: id, User: "u", Model: "gpt-4o-mini", PromptTokens: 1000, CompletionTokens: 100, CompletedAt: time.Now(),
		}})
	}
	if err := l.Apply(ctx, evs); err != nil {
		t.Fatal(err)
	}
	d = e.day(t, today)
	cost, _ := pricing.Default().Cost("gpt-4o-mini", 1000, 0, 100)
	if d.Reserved(time.Now()) != 0 || len(d.Holds) != 0 || d.Spent != 5*cost {
		t.Fatalf("after settling: reserved %v, %d holds, spent %v (want 0, 0, %v)", d.Reserved(time.Now()), len(d.Holds), d.Spent, 5*cost)
	}
	// Room again: a new query is admitted, and releasing it frees it.
	id := query.NewID(time.Now())
	if err := guards[0].Reserve(ctx, id, hold, time.Hour); err != nil {
		t.Fatalf("reserve after settling: %v", err)
	}
	if err := guards[1].Release(ctx, id); err != nil {
		t.Fatal(err)
	}
	if d = e.day(t, today); len(d.Holds) != 0 {
		t.Fatalf("hold not released: %+v", d.Holds)
	}
}

func TestHoldsLapse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	clock := time.Now()
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	g := budget.NewGuard(e.kv, 2*pricing.NanosPerUSD, nil, now)
	for range 2 {
		if err := g.Reserve(t.Context(), query.NewID(now()), pricing.NanosPerUSD, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Reserve(t.Context(), query.NewID(now()), 1, time.Minute); err != budget.ErrExhausted {
		t.Fatalf("third reservation: %v, want ErrExhausted", err)
	}
	mu.Lock()
	clock = clock.Add(2 * time.Minute) // the queries' lifetime has passed
	mu.Unlock()
	if err := g.Reserve(t.Context(), query.NewID(now()), pricing.NanosPerUSD, time.Minute); err != nil {
		t.Fatalf("reservation after holds lapsed: %v", err)
	}
	d := e.day(t, budget.Today(now()))
	if len(d.Holds) != 1 {
		t.Fatalf("%d holds kept, want only the live one", len(d.Holds))
	}
}

func TestUnknownModelIsChargedNotFree(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	l := budget.NewLedger(e.kv, pricing.Default(), nil, time.Now)
	now := time.Now()
	ev := queue.UsageEvent{RequestID: query.NewID(now), User: "u", Model: "mystery-model", PromptTokens: 1000, CompletionTokens: 1000, CompletedAt: now}
	if err := l.Apply(t.Context(), []budget.Event{{Seq: 1, Usage: ev}}); err != nil {
		t.Fatal(err)
	}
	d := e.day(t, budget.Today(now))
	if d.Spent <= 0 || d.Unpriced != 1 || d.ByModel["mystery-model"].PromptTokens != 1000 {
		t.Fatalf("unknown model: spent %v, unpriced %d, by model %+v", d.Spent, d.Unpriced, d.ByModel["mystery-model"])
	}
	for _, m := range pricing.Default().Models() {
		c, _ := pricing.Default().Cost(m, 1000, 0, 1000)
		if c > d.Spent {
			t.Fatalf("unknown model charged %v, less than %s's %v", d.Spent, m, c)
		}
	}
}

func TestEncodeUser(t *testing.T) {
	t.Parallel()
	seen := map[string]string{}
	for _, u := range []string{"auth0|abc", "alice@example.com", "a.b", "a b", "ünï", "", "..", "*", ">", string(make([]byte, 300))} {
		k := budget.UserKey("2026-12-03", u)
		if prev, ok := seen[k]; ok {
			t.Fatalf("%q and %q share key %s", u, prev, k)
		}
		seen[k] = u
	}
	e := newEnv(t, 0)
	for k := range seen {
		if _, err := e.kv.Put(t.Context(), k, []byte("x")); err != nil {
			t.Errorf("key %q: %v", k, err)
		}
	}
}

func TestDayOf(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 3, 23, 59, 59, 0, time.UTC)
	id := query.NewID(at)
	if got := budget.DayOf(id, at.Add(time.Hour)); got != "2026-12-03" {
		t.Fatalf("DayOf(ulid from 23:59:59, completed after midnight) = %s, want the admission day", got)
	}
	if got := budget.DayOf("not-a-ulid", at); got != "2026-12-03" {
		t.Fatalf("fallback day %s", got)
	}
	if d := budget.UntilMidnight(at); d != time.Second {
		t.Fatalf("UntilMidnight = %v", d)
	}
}
