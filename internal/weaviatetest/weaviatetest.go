// Package weaviatetest runs a real weaviate-server on loopback for tests.
//
// The binary is found in $WEAVIATE_SERVER_BIN, else <repo>/.tools/bin
// (where scripts/install-weaviate.sh puts it), else on $PATH. Without it,
// tests that need it are skipped, except in CI (CI=true), where they fail:
// there the Weaviate path must be tested.
//
// A server takes a few seconds to start, so a test package usually shares
// one, each test using a collection of its own:
//
//	func TestMain(m *testing.M) { os.Exit(weaviatetest.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		url := weaviatetest.Shared(t)
//		...
//	}
//
// [Start] runs a server of a test's own, for tests that stop it.
package weaviatetest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// EnvBinary names the weaviate-server binary to use.
	EnvBinary = "WEAVIATE_SERVER_BIN"
	// startTimeout bounds one start, on a loaded machine included (a
	// server is usually ready in about three seconds here).
	startTimeout = 90 * time.Second
	// stopTimeout is how long a server has to exit after SIGTERM before it
	// is killed.
	stopTimeout = 10 * time.Second
	// startAttempts: a start is tried again on other ports if the server
	// exits before it is ready (another process took a port meanwhile).
	startAttempts = 3
)

// ErrNoBinary is returned by [Launch] when no weaviate-server is installed.
var ErrNoBinary = errors.New("weaviate-server not found: run scripts/install-weaviate.sh, or set " + EnvBinary)

// Server is a running weaviate-server.
type Server struct {
	URL     string // http://127.0.0.1:<port>
	LogPath string // the server's stdout and stderr

	cmd    *exec.Cmd
	dir    string // data and log, removed by Stop unless keepDir
	exited chan struct{}
	err    error // the process's exit status, set before exited is closed

	stopOnce sync.Once
	stopErr  error
}

// Start starts a server for this test alone, with its data in a temporary
// folder, and stops it when the test ends. It skips the test if there is
// no binary (fails it under CI=true), and fails it if the server does not
// become ready; the server's log is then in the test output.
func Start(t testing.TB) (url string) {
	t.Helper()
	s, err := launchIn(t.TempDir())
	if err != nil {
		missing(t, err)
		t.Fatalf("starting weaviate-server: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("weaviate-server log (%s):\n%s", s.LogPath, s.Tail(60))
		}
		if err := s.Stop(); err != nil {
			t.Errorf("stopping weaviate-server: %v", err)
		}
	})
	return s.URL
}

// missing skips or fails the test when err is ErrNoBinary.
func missing(t testing.TB, err error) {
	t.Helper()
	if !errors.Is(err, ErrNoBinary) {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v (CI=true: the Weaviate tests must run)", err)
		return
	}
	t.Skipf("skipping: %v", err)
}

// Binary returns the path of the weaviate-server to run, or ErrNoBinary.
func Binary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("%s=%s: not an executable file", EnvBinary, p)
	}
	if root, ok := repoRoot(); ok {
		if p := filepath.Join(root, ".tools", "bin", "weaviate-server"); isExecutable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("weaviate-server"); err == nil {
		return p, nil
	}
	return "", ErrNoBinary
}

func isExecutable(p string) bool {
	info, err := os.Stat(p)
	return err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0
}

// repoRoot returns the nearest folder at or above the working directory
// (a test's package folder) that holds go.mod.
func repoRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// Launch starts a server outside any test (for TestMain), with its data in
// a new temporary folder, and waits until it is ready. Call Stop when done.
// It returns an error wrapping ErrNoBinary if there is no binary.
func Launch() (*Server, error) { return launchIn("") }

// launchIn is Launch with the server's folders under base (the system's
// temporary folder if base is "").
func launchIn(base string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		s, err := launch(bin, base)
		if err == nil {
			return s, nil
		}
		var early *exitedEarly
		if !errors.As(err, &early) || attempt == startAttempts {
			return nil, err
		}
		// Probably lost a port to another process between picking and binding; try others.
	}
}

// exitedEarly is a server that exited before it was ready.
type exitedEarly struct {
	err  error
	tail string
}

func (e *exitedEarly) Error() string {
	return fmt.Sprintf("weaviate-server exited before it was ready (%v); its log ends:\n%s", e.err, e.tail)
}

func launch(bin, base string) (*Server, error) {
	dir, err := os.MkdirTemp(base, "weaviatetest-")
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(6)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	httpPort := ports[0]
	s := &Server{
		URL:     "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)),
		LogPath: filepath.Join(dir, "weaviate.log"),
		dir:     dir,
		exited:  make(chan struct{}),
	}
	logFile, err := os.Create(s.LogPath)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	defer logFile.Close() // the child has its own copy

	data := filepath.Join(dir, "data")
	cmd := exec.Command(bin, "--host", "127.0.0.1", "--port", strconv.Itoa(httpPort), "--scheme", "http")
	cmd.Env = append(os.Environ(),
		"PERSISTENCE_DATA_PATH="+data,
		"AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED=true",
		"DEFAULT_VECTORIZER_MODULE=none",
		"CLUSTER_HOSTNAME=node1",
		// Without these two it picks an IPv6 address and dies.
		"CLUSTER_ADVERTISE_ADDR=127.0.0.1",
		"CLUSTER_BIND_ADDR=127.0.0.1",
		"DISABLE_TELEMETRY=true",
		"RAFT_BOOTSTRAP_EXPECT=1",
		// The default multiplier (5) makes a lone node wait about ten
		// seconds before it elects itself; 1 makes it about two.
		"RAFT_TIMEOUTS_MULTIPLIER=1",
		// Otherwise pprof listens on :6060, on every interface, and a
		// second server logs that the port is taken.
		"GO_PROFILING_DISABLE=true",
		"LOG_LEVEL=info",
		"GRPC_PORT="+strconv.Itoa(ports[1]),
		"CLUSTER_GOSSIP_BIND_PORT="+strconv.Itoa(ports[2]),
		"CLUSTER_DATA_BIND_PORT="+strconv.Itoa(ports[3]),
		"RAFT_PORT="+strconv.Itoa(ports[4]),
		"RAFT_INTERNAL_RPC_PORT="+strconv.Itoa(ports[5]),
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	s.cmd = cmd
	go func() {
		s.err = cmd.Wait()
		close(s.exited)
	}()

	if err := s.waitReady(startTimeout); err != nil {
		tail := s.Tail(40)
		_ = s.Stop()
		var early *exitedEarly
		if errors.As(err, &early) {
			early.tail = tail
			return nil, early
		}
		return nil, fmt.Errorf("%w; its log ends:\n%s", err, tail)
	}
	return s, nil
}

// waitReady polls /v1/.well-known/ready until it answers 200, the process
// exits, or timeout passes.
func (s *Server) waitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/v1/.well-known/ready", nil)
		if resp, err := client.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return &exitedEarly{err: s.err}
		case <-ctx.Done():
			return fmt.Errorf("weaviate-server at %s not ready after %v", s.URL, timeout)
		case <-tick.C:
		}
	}
}

// Stop stops the server (SIGTERM, then SIGKILL after ten seconds), waits
// for it to exit and removes its data. It may be called more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		select {
		case <-s.exited:
		default:
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(stopTimeout):
				_ = s.cmd.Process.Kill()
				<-s.exited
				s.stopErr = fmt.Errorf("weaviate-server did not stop within %v of SIGTERM; killed", stopTimeout)
			}
		}
		if err := os.RemoveAll(s.dir); err != nil && s.stopErr == nil {
			s.stopErr = err
		}
	})
	return s.stopErr
}

// Tail returns the last n lines of the server's log.
func (s *Server) Tail(n int) string {
	f, err := os.Open(s.LogPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// freePorts returns n distinct loopback ports that were free a moment ago,
// over TCP and UDP (the gossip port uses both). The listeners are all held
// until every port is picked, so the ports differ.
func freePorts(n int) ([]int, error) {
	var (
		ports   []int
		closers []func() error
	)
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100 {
			return nil, errors.New("no free loopback ports")
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		closers = append(closers, l.Close)
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // taken over UDP: pick another
		}
		closers = append(closers, u.Close)
		ports = append(ports, port)
	}
	return ports, nil
}

// shared is the server Shared hands out, started on first use and stopped
// by Main.
var shared struct {
	sync.Mutex
	inMain bool
	server *Server
	err    error // the first start's error, returned to every later caller
}

// Main runs a test package's tests (call it from TestMain) and then stops
// the server that [Shared] started, if any. It returns m.Run's exit code.
func Main(m *testing.M) int {
	shared.Lock()
	shared.inMain = true
	shared.Unlock()

	code := m.Run()

	shared.Lock()
	defer shared.Unlock()
	if s := shared.server; s != nil {
		if code != 0 {
			fmt.Fprintf(os.Stderr, "weaviate-server log (%s):\n%s\n", s.LogPath, s.Tail(60))
		}
		if err := s.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping weaviate-server: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Shared returns the URL of the server shared by the tests of this
// package, starting it on the first call. Tests sharing it must use
// collections of their own. It skips the test if there is no binary (fails
// it under CI=true), and needs [Main] in TestMain, which stops the server.
func Shared(t testing.TB) (url string) {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if !shared.inMain {
		t.Fatal("weaviatetest.Shared needs TestMain to call weaviatetest.Main")
	}
	if shared.server == nil && shared.err == nil {
		shared.server, shared.err = Launch()
	}
	if shared.err != nil {
		missing(t, shared.err)
		t.Fatalf("starting weaviate-server: %v", shared.err)
	}
	return shared.server.URL
}
