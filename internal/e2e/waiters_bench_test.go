package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gravitycar/tollgate/internal/natstest"
	"github.com/gravitycar/tollgate/internal/query"
	"github.com/gravitycar/tollgate/internal/queue"
)

// BenchmarkWaiters measures what held requests cost the api: the resident
// memory of one api process holding 10,000 concurrent long-polls
// (GET /v1/queries/{id}?wait=60), and of a fresh one holding 10,000 event
// streams (GET /v1/queries/{id}/events), each on its own query that stays
// queued (there is no worker). It reports the process's VmRSS before and
// while holding them, and the difference per waiter. The target is under
// 300 MB RSS with 10,000 waiters.
//
// It builds its own api binary without -race (the race detector multiplies
// memory), runs it against an in-process nats-server (so NATS's memory is
// not counted), and writes the queued records straight into the queries
// bucket: it measures waiting, not admission. Each kind gets a fresh
// process, because a Go process keeps memory it no longer uses for a while.
// One run is the measurement; b.N is not used:
//
//	go test -run '^$' -bench Waiters -benchtime 1x ./internal/e2e/
//
// TOLLGATE_WAITERS sets the number of waiters (default 10000);
// TOLLGATE_API_GOGC and TOLLGATE_API_GOMEMLIMIT, when set, are given to the
// api as GOGC and GOMEMLIMIT, to measure tuned settings. -short skips it.
func BenchmarkWaiters(b *testing.B) {
	if testing.Short() {
		b.Skip("holds 10,000 connections twice; not with -short")
	}
	n := 10_000
	if v := os.Getenv("TOLLGATE_WAITERS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("TOLLGATE_WAITERS=%q: want a positive number", v)
		}
	}
	raiseFileLimit(b, uint64(n)+1000) // this process holds the client side; the api inherits the limit

	bin := filepath.Join(b.TempDir(), "api")
	build := exec.Command("go", "build", "-o", bin, "./api")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building the api: %v\n%s", err, out)
	}
	nc := natstest.Start(b)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	env := map[string]string{
		"AUTH_MODE": "dev",
		"HTTP_ADDR": "127.0.0.1:0",
		"NATS_URL":  nc.ConnectedUrl(),
		"DATA_DIR":  b.TempDir(),
		// Waiting takes no quota, but leave room for anything that does.
		"TOKEN_BUCKET_CAPACITY":    "1000000",
		"DAILY_USER_REQUEST_LIMIT": "0",
	}
	for _, k := range []string{"GOGC", "GOMEMLIMIT"} {
		if v := os.Getenv("TOLLGATE_API_" + k); v != "" {
			env[k] = v
			b.Logf("api runs with %s=%s", k, v)
		}
	}

	var ids []string
	for _, kind := range []waitKind{longPoll, eventStream} {
		a := startAPIProcess(b, bin, env)
		if ids == nil {
			ids = createQueued(b, js, "bench", n)
		}
		tok := a.devToken(b, "bench")
		r := a.holdWaiters(b, kind, ids, tok)
		a.stop(b)
		b.Logf("%s: %d held; api RSS %.1f MB idle → %.1f MB holding (peak %.1f MB), %.1f KB per waiter; "+
			"goroutines %d → %d; heap in use %.1f → %.1f MB; stacks %.1f → %.1f MB; opened in %s",
			kind, r.held, mb(r.before.rss), mb(r.during.rss), mb(r.peak), r.perWaiterKB(),
			r.before.goroutines, r.during.goroutines, mb(r.before.heap), mb(r.during.heap),
			mb(r.before.stacks), mb(r.during.stacks), r.opened.Round(time.Millisecond))
		b.ReportMetric(mb(r.before.rss), kind.unit("idle-MB"))
		b.ReportMetric(mb(r.during.rss), kind.unit("MB"))
		b.ReportMetric(r.perWaiterKB(), kind.unit("KB/waiter"))
		if limit := 300.0; mb(r.during.rss) >= limit {
			// Reported, not failed: this is a measurement (docs/waiters-bench.md).
			b.Logf("%s: OVER THE %.0f MB TARGET: api RSS %.1f MB holding %d waiters", kind, limit, mb(r.during.rss), n)
		}
	}
	b.ReportMetric(0, "ns/op") // one run, not a per-op time
}

type waitKind string

const (
	longPoll    waitKind = "long-polls"
	eventStream waitKind = "sse-streams"
)

func (k waitKind) unit(u string) string { return string(k) + "-" + u }

func (k waitKind) path(id string) string {
	if k == longPoll {
		return "/v1/queries/" + id + "?wait=60"
	}
	return "/v1/queries/" + id + "/events"
}

// apiSample is the api process's state at one moment.
type apiSample struct {
	rss, hwm             int64 // bytes, from /proc/<pid>/status
	goroutines, fds      int
	waiters              int   // tollgate_waiters: requests the api's hub is holding
	heap, stacks         int64 // bytes in use, from /metrics
	scrapedAt            time.Time
	scrapeErr, statusErr error
}

type waitResult struct {
	held           int
	before, during apiSample
	peak           int64
	opened         time.Duration
}

func (r waitResult) perWaiterKB() float64 {
	return float64(r.during.rss-r.before.rss) / 1024 / float64(r.held)
}

func mb(bytes int64) float64 { return float64(bytes) / (1 << 20) }

// apiProcess is an api binary started by the benchmark.
type apiProcess struct {
	cmd    *exec.Cmd
	url    string
	done   chan struct{}
	mu     sync.Mutex
	tail   []string // the last lines of output, for failures
	client *http.Client
}

func startAPIProcess(b *testing.B, bin string, env map[string]string) *apiProcess {
	b.Helper()
	cmd := exec.Command(bin)
	cmd.Dir = b.TempDir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	a := &apiProcess{cmd: cmd, done: make(chan struct{}), client: &http.Client{Timeout: 30 * time.Second}}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			a.mu.Lock()
			if a.tail = append(a.tail, line); len(a.tail) > 40 {
				a.tail = a.tail[1:]
			}
			a.mu.Unlock()
			var m struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "listening" {
				addr <- m.Addr
			}
		}
		cmd.Wait()
		close(a.done)
	}()
	b.Cleanup(func() {
		cmd.Process.Kill()
		<-a.done
	})
	select {
	case ad := <-addr:
		a.url = "http://" + ad
	case <-a.done:
		b.Fatalf("api exited before listening:\n%s", a.output())
	case <-time.After(time.Minute):
		b.Fatalf("api did not listen within a minute:\n%s", a.output())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := a.client.Get(a.url + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return a
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("api not ready within 30s:\n%s", a.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (a *apiProcess) output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.tail, "\n")
}

func (a *apiProcess) stop(b *testing.B) {
	b.Helper()
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(40 * time.Second):
		b.Errorf("api did not stop within 40s of SIGTERM")
		a.cmd.Process.Kill()
		<-a.done
	}
}

func (a *apiProcess) devToken(b *testing.B, user string) string {
	b.Helper()
	res, err := a.client.Get(a.url + "/dev/token?user=" + user)
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(res.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		b.Fatalf("dev token: %d %v", res.StatusCode, err)
	}
	return tok.AccessToken
}

// sample reads the process's memory from /proc and its Go runtime figures
// from /metrics.
func (a *apiProcess) sample() apiSample {
	s := apiSample{scrapedAt: time.Now()}
	s.rss, s.hwm, s.statusErr = procMemory(a.cmd.Process.Pid)
	res, err := a.client.Get(a.url + "/metrics")
	if err != nil {
		s.scrapeErr = err
		return s
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_goroutines":
			s.goroutines = int(v)
		case "tollgate_waiters":
			s.waiters = int(v)
		case "process_open_fds":
			s.fds = int(v)
		case "go_memstats_heap_inuse_bytes":
			s.heap = int64(v)
		case "go_memstats_stack_inuse_bytes":
			s.stacks = int64(v)
		}
	}
	return s
}

// procMemory reads VmRSS and VmHWM (peak RSS) of pid, in bytes.
func procMemory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		f := strings.Fields(rest) // "123456 kB"
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("/proc/%d/status: odd line %q", pid, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if name == "VmRSS" {
			rss = kb * 1024
		} else {
			hwm = kb * 1024
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
	}
	return rss, hwm, nil
}

// createQueued writes n queued query records owned by user into the
// queries bucket, as the api's submit would, and returns their ids.
func createQueued(b *testing.B, js jetstream.JetStream, user string, n int) []string {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kv, err := js.KeyValue(ctx, queue.QueriesBucket)
	if err != nil {
		b.Fatal(err)
	}
	store := query.NewStore(kv)
	ids := make([]string, n)
	now := time.Now().UTC()
	for i := range ids {
		ids[i] = query.NewID(now)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	const writers = 32
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n; i += writers {
				rec := query.Record{ID: ids[i], User: user, Status: query.Queued, Question: "Will this ever be answered?", K: 5, CreatedAt: now}
				if err := store.Create(ctx, rec); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatalf("creating queued queries: %v", err)
	default:
	}
	return ids
}

// holdWaiters opens one waiter of kind on each id, waits until the api
// holds them all, samples its memory, then lets them all go.
func (a *apiProcess) holdWaiters(b *testing.B, kind waitKind, ids []string, tok string) waitResult {
	b.Helper()
	n := len(ids)
	// Warm up: the token is verified and cached, the handlers have run once.
	for range 3 {
		req, _ := http.NewRequest("GET", a.url+"/v1/queries/"+ids[0], nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := a.client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("warm-up GET: %d", res.StatusCode)
		}
	}
	time.Sleep(time.Second)
	r := waitResult{before: a.sample()}
	if r.before.statusErr != nil || r.before.scrapeErr != nil {
		b.Fatalf("sampling the idle api: %v %v", r.before.statusErr, r.before.scrapeErr)
	}

	// One connection per waiter, opened a few hundred at a time (the
	// listen backlog is finite), never reused.
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext:       (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	ctx, release := context.WithCancel(context.Background())
	defer release()
	var (
		wg          sync.WaitGroup
		sem         = make(chan struct{}, 256)
		early, errs atomic.Int64 // waiters that ended before release
		firstEvents atomic.Int64 // event streams that delivered their first event
		lastErr     atomic.Value
	)
	start := time.Now()
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			var once sync.Once
			free := func() { once.Do(func() { <-sem }) }
			defer free()
			trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { free() }}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", a.url+kind.path(id), nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			if kind == eventStream {
				req.Header.Set("Accept", "text/event-stream")
			}
			res, err := client.Do(req)
			if err != nil {
				if ctx.Err() == nil {
					errs.Add(1)
					lastErr.Store(err)
				}
				return
			}
			defer res.Body.Close()
			if kind == eventStream && res.StatusCode == http.StatusOK {
				if first, err := readEvent(res.Body); err == nil && strings.Contains(first, `"status":"queued"`) {
					firstEvents.Add(1)
				}
			}
			io.Copy(io.Discard, res.Body) // an event stream stays open until release
			if ctx.Err() == nil {
				early.Add(1)
			}
		})
	}

	// Held means: the api's hub holds every waiter and has a socket for
	// each (and every stream has sent its first event).
	deadline := time.Now().Add(45 * time.Second) // well inside ?wait=60
	for {
		s := a.sample()
		held := s.waiters >= n && s.fds-r.before.fds >= n
		if kind == eventStream {
			held = held && firstEvents.Load() == int64(n)
		}
		if held {
			r.opened = time.Since(start)
			break
		}
		if errs.Load() > 0 || early.Load() > 0 {
			b.Fatalf("%s: %d failed and %d ended early while opening (last error: %v)", kind, errs.Load(), early.Load(), lastErr.Load())
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: api holds %d waiters and %d sockets more than idle after 45s, want %d of each (%d first events)",
				kind, s.waiters, s.fds-r.before.fds, n, firstEvents.Load())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Let the heap settle, then take the larger of a few samples.
	for range 5 {
		time.Sleep(500 * time.Millisecond)
		if s := a.sample(); s.rss > r.during.rss {
			r.during = s
		}
	}
	r.peak = r.during.hwm
	if e := early.Load(); e > 0 {
		b.Fatalf("%s: %d waiters ended before they were released", kind, e)
	}
	r.held = n

	release()
	wg.Wait()
	return r
}

// readEvent reads one server-sent event (up to its blank line).
func readEvent(r io.Reader) (string, error) {
	br := bufio.NewReader(r)
	var ev bytes.Buffer
	for {
		line, err := br.ReadString('\n')
		ev.WriteString(line)
		if err != nil {
			return ev.String(), err
		}
		if line == "\n" && ev.Len() > 1 {
			return ev.String(), nil
		}
	}
}

// raiseFileLimit raises this process's soft limit on open files to at
// least want (and at most the hard limit); processes it starts inherit it.
func raiseFileLimit(b *testing.B, want uint64) {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur >= want {
		return
	}
	lim.Cur = min(max(want, lim.Cur), lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatalf("raising the open files limit to %d: %v", lim.Cur, err)
	}
	if lim.Cur < want {
		b.Fatalf("open files limit is %d (hard), need %d: raise ulimit -n", lim.Max, want)
	}
}
