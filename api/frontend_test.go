package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/budget"
	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
)

// answerer plays the worker: it takes questions from QUERIES and, when
// released, moves their records to running and then succeeded.
type answerer struct {
	a    *testAPI
	gate chan struct{} // one receive per question answered; nil = answer at once
}

func (w *answerer) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cons, err := w.a.js.CreateOrUpdateConsumer(ctx, queue.QueriesStream, jetstream.ConsumerConfig{
		Durable: queue.WorkersConsumer, AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		var sub queue.Submission
		json.Unmarshal(msg.Data(), &sub)
		go func() {
			w.a.store.Update(ctx, sub.ID, func(r *query.Record) error { r.Status = query.Running; return nil })
			if w.gate != nil {
				select {
				case <-w.gate:
				case <-ctx.Done():
					return
				}
			}
			w.a.store.Update(ctx, sub.ID, func(r *query.Record) error {
				r.Status, r.Answer = query.Succeeded, "answer to "+sub.Question
				r.Usage = &query.Usage{Model: "gpt-4o-mini", PromptTokens: 10, CompletionTokens: 2}
				now := time.Now().UTC()
				r.CompletedAt = &now
				return nil
			})
			msg.Ack()
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Stop(); cancel() })
}

func submitted(t *testing.T, res response) string {
	t.Helper()
	if res.status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", res.status, res.body)
	}
	var acc acceptedResponse
	json.Unmarshal(res.body, &acc)
	return acc.ID
}

// eachWayOfWaiting runs test against an api whose waiters are detached
// from net/http, and against one where they stay on their goroutines.
func eachWayOfWaiting(t *testing.T, test func(t *testing.T, a *testAPI, detached bool)) {
	t.Parallel()
	t.Run("detached", func(t *testing.T) { t.Parallel(); test(t, newTestAPI(t), true) })
	t.Run("held", func(t *testing.T) { t.Parallel(); test(t, newTestAPI(t).held(), false) })
}

// checkConnection checks that a waiting response was detached (it ends
// with its connection: "Connection: close") or not.
func checkConnection(t *testing.T, closed, detached bool) {
	t.Helper()
	if closed != detached {
		t.Errorf("a waiting response ended its connection: %v, want %v (detached)", closed, detached)
	}
}

func TestLongPoll(t *testing.T) { eachWayOfWaiting(t, testLongPoll) }

func testLongPoll(t *testing.T, a *testAPI, detached bool) {
	w := &answerer{a: a, gate: make(chan struct{})}
	w.run(t)
	tok := a.token(t, "alice")
	id := submitted(t, a.do(t, "POST", "/v1/queries", tok, "application/json", submitBody))

	// Invalid waits are refused.
	for _, v := range []string{"61", "-1", "soon", "1.5"} {
		if res := a.do(t, "GET", "/v1/queries/"+id+"?wait="+v, tok, "", ""); res.status != http.StatusBadRequest {
			t.Errorf("wait=%s: %d, want 400", v, res.status)
		}
	}

	// Times out with the current record when nothing finishes.
	start := time.Now()
	res := a.do(t, "GET", "/v1/queries/"+id+"?wait=1", tok, "", "")
	var rec query.Record
	json.Unmarshal(res.body, &rec)
	if res.status != 200 || rec.Status.Final() || time.Since(start) < time.Second {
		t.Fatalf("wait=1 on an unfinished query: %d %s after %v", res.status, rec.Status, time.Since(start))
	}
	checkConnection(t, res.close, detached)
	if rec.ID != id || res.header.Get("X-Request-Id") == "" || res.header.Get("RateLimit-Limit") != "15" {
		t.Errorf("timed-out long-poll: record %q, headers %v", rec.ID, res.header)
	}

	// Returns as soon as the query finishes, long before the wait is over.
	waitFor(t, func() bool { n, _ := a.hub.counts(); return n == 0 && a.detached.count() == 0 }) // that one has let go
	done := make(chan response, 1)
	go func() { done <- a.do(t, "GET", "/v1/queries/"+id+"?wait=60", tok, "", "") }()
	waitFor(t, func() bool {
		n, _ := a.hub.counts()
		return n == 1 && (!detached || a.detached.count() == 1) // parked, not still reading the record
	})
	finished := time.Now()
	w.gate <- struct{}{}
	res = <-done
	latency := time.Since(finished)
	json.Unmarshal(res.body, &rec)
	if rec.Status != query.Succeeded || latency > 30*time.Second {
		t.Fatalf("long-poll answered %s after %v", rec.Status, latency)
	}
	checkConnection(t, res.close, detached)
	t.Logf("long-poll answered %v after the query finished", latency)
	// A detached waiter lets go once its connection is closed, which may
	// be just after the client has read the whole response.
	waitFor(t, func() bool { n, _ := a.hub.counts(); return n == 0 })
	// Others still get 404 when they wait.
	if res := a.do(t, "GET", "/v1/queries/"+id+"?wait=1", a.token(t, "mallory"), "", ""); res.status != 404 {
		t.Fatalf("another user waiting: %d", res.status)
	}
}

func TestThousandWaitersShareOneWatch(t *testing.T) {
	t.Parallel()
	a := newTestAPIWith(t, nil, nil, func(s *settings) { s.RateLimit.Capacity = 100; s.RateLimit.DailyLimit = 0 })
	w := &answerer{a: a, gate: make(chan struct{})}
	w.run(t)
	const queries, waiters = 10, 1000
	tok := a.token(t, "alice")
	var ids []string
	for range queries {
		ids = append(ids, submitted(t, a.do(t, "POST", "/v1/queries", tok, "application/json", submitBody)))
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: waiters}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range waiters {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", a.srv.URL+"/v1/queries/"+ids[i%queries]+"?wait=60", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			res, err := client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer res.Body.Close()
			var rec query.Record
			json.NewDecoder(res.Body).Decode(&rec)
			if rec.Status == query.Succeeded {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		})
	}
	waitFor(t, func() bool { n, _ := a.hub.counts(); return n == waiters })
	if _, watches := a.hub.counts(); watches != 1 {
		t.Fatalf("%d watches for %d waiters, want 1", watches, waiters)
	}
	for range queries {
		w.gate <- struct{}{}
	}
	wg.Wait()
	if ok != waiters {
		t.Fatalf("%d of %d waiters saw the answer", ok, waiters)
	}
}

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct {
	id, event string
	rec       query.Record
}

// stream reads SSE events until the server ends the stream, and returns
// the response's status and whether it ended its connection. It may run
// on its own goroutine.
func stream(t *testing.T, a *testAPI, id, tok, lastEventID string, each func(sseEvent)) (status int, closed bool) {
	t.Helper()
	req, _ := http.NewRequest("GET", a.srv.URL+"/v1/queries/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	res, err := a.srv.Client().Do(req)
	if err != nil {
		t.Error(err)
		return 0, false
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		return res.StatusCode, res.Close
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
		return res.StatusCode, res.Close
	}
	sc := bufio.NewScanner(res.Body)
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			ev.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.rec)
		case line == "" && ev.event != "":
			each(ev)
			ev = sseEvent{}
		}
	}
	return res.StatusCode, res.Close
}

func TestServerSentEvents(t *testing.T) { eachWayOfWaiting(t, testServerSentEvents) }

func testServerSentEvents(t *testing.T, a *testAPI, detached bool) {
	w := &answerer{a: a, gate: make(chan struct{})}
	tok := a.token(t, "alice")
	id := submitted(t, a.do(t, "POST", "/v1/queries", tok, "application/json", submitBody))

	var events []sseEvent
	seen := make(chan int, 3)
	done := make(chan bool)
	go func() {
		_, closed := stream(t, a, id, tok, "", func(e sseEvent) {
			events = append(events, e)
			seen <- len(events)
		})
		done <- closed
	}()
	// Each change is let happen once the one before is on the wire: a
	// waiter held on its goroutine coalesces changes it has not read yet
	// (the final one is never lost), and this test is about order.
	next := func() {
		select {
		case <-seen:
		case <-time.After(30 * time.Second):
			t.Fatal("no event within 30 s")
		}
	}
	next()   // queued
	w.run(t) // the worker picks it up: running
	next()
	w.gate <- struct{}{}
	checkConnection(t, <-done, detached) // the stream ends after the final event
	var got []string
	for _, e := range events {
		if e.event != "status" || e.id == "" || e.rec.ID != id {
			t.Fatalf("event %+v", e)
		}
		got = append(got, string(e.rec.Status))
	}
	if strings.Join(got, ",") != "queued,running,succeeded" {
		t.Fatalf("statuses %v, want queued,running,succeeded", got)
	}
	if events[2].rec.Answer == "" {
		t.Fatal("the succeeded event does not carry the record")
	}

	// Reconnecting after "running" still gets the final event; after the
	// final one, the stream is empty and closed.
	var resumed []sseEvent
	if len(events) != 3 {
		t.Fatalf("events %+v, want 3", events)
	}
	stream(t, a, id, tok, events[1].id, func(e sseEvent) { resumed = append(resumed, e) })
	if len(resumed) != 1 || resumed[0].rec.Status != query.Succeeded {
		t.Fatalf("resumed after running: %+v", resumed)
	}
	var none []sseEvent
	stream(t, a, id, tok, events[2].id, func(e sseEvent) { none = append(none, e) })
	if len(none) != 0 {
		t.Fatalf("resumed after the final event: %+v", none)
	}
	// Only the owner may stream.
	if status, _ := stream(t, a, id, a.token(t, "mallory"), "", func(sseEvent) {}); status != 404 {
		t.Fatalf("another user streaming: %d", status)
	}
}

func TestSynchronousEndpoint(t *testing.T) {
	t.Parallel()
	a := newTestAPIWith(t, nil, nil, func(s *settings) { s.SyncWait = 2 * time.Second })
	w := &answerer{a: a}
	w.run(t)
	tok := a.token(t, "alice")
	res := a.do(t, "POST", "/api/query", tok, "application/json", `{"question":"q?","k":2}`)
	var out syncResponse
	json.Unmarshal(res.body, &out)
	if res.status != 200 || out.Answer != "answer to q?" || out.RequestID == "" || out.Usage == nil {
		t.Fatalf("sync: %d %s", res.status, res.body)
	}
	if res.header.Get("RateLimit-Remaining") != "14" {
		t.Fatalf("sync endpoint not metered: %v", res.header)
	}
	// Same validation and auth as /v1/queries.
	if res := a.do(t, "POST", "/api/query", tok, "application/json", `{"question":""}`); res.status != 400 {
		t.Fatalf("invalid body: %d", res.status)
	}
	if res := a.do(t, "POST", "/api/query", "", "application/json", `{"question":"q"}`); res.status != 401 {
		t.Fatalf("no token: %d", res.status)
	}

	// Not finished in SYNC_WAIT_SECONDS: 202 with the id.
	w.gate = make(chan struct{})
	slow := newTestAPIWith(t, nil, nil, func(s *settings) { s.SyncWait = time.Second })
	(&answerer{a: slow, gate: make(chan struct{})}).run(t)
	res = slow.do(t, "POST", "/api/query", slow.token(t, "bob"), "application/json", `{"question":"slow?"}`)
	var acc syncAccepted
	json.Unmarshal(res.body, &acc)
	if res.status != 202 || acc.RequestID == "" || acc.ID != acc.RequestID || res.header.Get("Location") != "/v1/queries/"+acc.ID {
		t.Fatalf("slow sync: %d %s", res.status, res.body)
	}
}

func TestIdempotencyKeys(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	alice, bob := a.token(t, "alice"), a.token(t, "bob")
	post := func(tok, key, body string) response {
		req, _ := http.NewRequest("POST", a.srv.URL+"/v1/queries", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		res, err := a.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var b strings.Builder
		bufio.NewReader(res.Body).WriteTo(&b)
		return response{status: res.StatusCode, header: res.Header, body: []byte(b.String())}
	}

	// Two identical first requests at once: exactly one query.
	results := make([]response, 2)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() { results[i] = post(alice, "key-1", submitBody) })
	}
	wg.Wait()
	first, second := submitted(t, results[0]), submitted(t, results[1])
	if first != second {
		t.Fatalf("two queries (%s, %s) for one key", first, second)
	}
	// Again later: the same query, no new message, no second token.
	if again := submitted(t, post(alice, "key-1", submitBody)); again != first {
		t.Fatalf("repeat made %s, want %s", again, first)
	}
	if n := a.queued(t); n != 1 {
		t.Fatalf("%d messages queued, want 1", n)
	}
	if m := me(t, a, "alice"); m.DailyUsed != 1 {
		t.Fatalf("daily used %d after one query sent three times", m.DailyUsed)
	}
	// One reservation: the day's document holds exactly one hold.
	en, err := a.budgetKV.Get(t.Context(), budget.DayKey(budget.DayOf(first, time.Now())))
	if err != nil {
		t.Fatal(err)
	}
	var day budget.Day
	if err := json.Unmarshal(en.Value(), &day); err != nil || len(day.Holds) != 1 || day.Holds[first].Amount == 0 {
		t.Fatalf("holds %+v (%v), want one for %s", day.Holds, err, first)
	}
	// Same key, different body: 422.
	if res := post(alice, "key-1", `{"question":"something else"}`); res.status != http.StatusUnprocessableEntity {
		t.Fatalf("different body: %d", res.status)
	} else {
		res.problem(t)
	}
	// Keys are per user.
	if other := submitted(t, post(bob, "key-1", submitBody)); other == first {
		t.Fatal("bob's key returned alice's query")
	}
	// Bad keys.
	for _, k := range []string{"", strings.Repeat("k", 256), "tab\there", "ü"} {
		if res := post(alice, k, submitBody); res.status != 400 {
			t.Errorf("key %q: %d, want 400", k, res.status)
		}
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	a := newTestAPIWith(t, nil, nil, func(s *settings) { s.CORSOrigins = []string{"https://app.example"} })
	preflight := func(origin string) *http.Response {
		req, _ := http.NewRequest("OPTIONS", a.srv.URL+"/v1/queries", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type, idempotency-key")
		res, err := a.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	res := preflight("https://app.example")
	h := res.Header
	if res.StatusCode != 204 || h.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Idempotency-Key") ||
		!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") ||
		!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") {
		t.Fatalf("allowed preflight: %d %v", res.StatusCode, h)
	}
	if res := preflight("https://evil.example"); res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("disallowed origin got CORS headers: %v", res.Header)
	}
	req, _ := http.NewRequest("POST", a.srv.URL+"/v1/queries", strings.NewReader(submitBody))
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+a.token(t, "alice"))
	res, err := a.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	expose := res.Header.Get("Access-Control-Expose-Headers")
	for _, name := range []string{"Location", "RateLimit-Remaining", "Retry-After", "X-Request-Id"} {
		if !strings.Contains(expose, name) {
			t.Errorf("%s not exposed: %q", name, expose)
		}
	}

}

func TestHeartbeats(t *testing.T) {
	eachWayOfWaiting(t, func(t *testing.T, _ *testAPI, detached bool) {
		a := newTestAPIWith(t, nil, nil, func(s *settings) { s.heartbeat = 20 * time.Millisecond })
		if !detached {
			a = a.held()
		}
		tok := a.token(t, "alice")
		id := submitted(t, a.do(t, "POST", "/v1/queries", tok, "application/json", submitBody))
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second) // a stream without heartbeats fails, not hangs
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", a.srv.URL+"/v1/queries/"+id+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := a.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		// Three heartbeat comments come after the first event, and nothing
		// else while the query stays queued.
		sc := bufio.NewScanner(res.Body)
		var lines []string
		beats := 0
		for beats < 3 && sc.Scan() {
			lines = append(lines, sc.Text())
			if sc.Text() == ": heartbeat" {
				beats++
			}
		}
		if beats < 3 {
			t.Fatalf("stream ended (%v) after %q", sc.Err(), lines)
		}
		if !strings.HasPrefix(lines[0], "id: ") || lines[1] != "event: status" || strings.Count(strings.Join(lines, "\n"), "event:") != 1 {
			t.Errorf("stream began %q", lines)
		}

		// A client that goes away is noticed at the next heartbeat: its
		// waiter does not outlive it.
		res.Body.Close()
		waitFor(t, func() bool { n, _ := a.hub.counts(); return n == 0 })
	})
}

func TestShutdownAnswersDetachedWaiters(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t)
	tok := a.token(t, "alice")
	id := submitted(t, a.do(t, "POST", "/v1/queries", tok, "application/json", submitBody))

	polled := make(chan response, 1)
	go func() { polled <- a.do(t, "GET", "/v1/queries/"+id+"?wait=60", tok, "", "") }()
	streamed := make(chan int, 1)
	go func() {
		n := 0
		stream(t, a, id, tok, "", func(sseEvent) { n++ })
		streamed <- n
	}()
	waitFor(t, func() bool { return a.detached.count() == 2 })

	a.detached.shutdown()
	// The long-poll gets the record as it is; the stream, having sent
	// "queued", is closed for the client to resume elsewhere.
	res := <-polled
	var rec query.Record
	json.Unmarshal(res.body, &rec)
	if res.status != http.StatusOK || rec.ID != id || rec.Status != query.Queued {
		t.Fatalf("long-poll at shutdown: %d %s", res.status, res.body)
	}
	if n := <-streamed; n != 1 {
		t.Fatalf("stream at shutdown: %d events, want 1", n)
	}
	if n, _ := a.hub.counts(); n != 0 {
		t.Fatalf("%d waiters left after shutdown", n)
	}
	// Later waits are held the usual way, not detached.
	res = a.do(t, "GET", "/v1/queries/"+id+"?wait=1", tok, "", "")
	checkConnection(t, res.close, false)
}
