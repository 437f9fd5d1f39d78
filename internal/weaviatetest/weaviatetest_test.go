package weaviatetest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func TestLaunchAndStop(t *testing.T) {
	if _, err := Binary(); err != nil {
		missing(t, err)
		t.Fatal(err)
	}
	s, err := Launch()
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

	resp, err := client.Get(s.URL + "/v1/meta")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"version"`) {
		t.Errorf("GET /v1/meta: %d %s", resp.StatusCode, body)
	}
	if !strings.HasPrefix(s.URL, "http://127.0.0.1:") {
		t.Errorf("URL %s, want loopback", s.URL)
	}
	if tail := s.Tail(5); tail == "" {
		t.Error("empty server log")
	}

	if err := s.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := client.Get(s.URL + "/v1/.well-known/ready"); err == nil {
		t.Error("server still answers after Stop")
	}
	if _, err := os.Stat(s.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data folder %s left after Stop: %v", s.dir, err)
	}
}

func TestStart(t *testing.T) {
	url := Start(t)
	resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).
		Get(url + "/v1/.well-known/ready")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("ready: status %d", resp.StatusCode)
	}
}

// recorder is a testing.TB that records Skip and Fatal instead of ending
// the test.
type recorder struct {
	testing.TB
	skipped, fatal string
}

func (r *recorder) Helper()                       {}
func (r *recorder) Skipf(format string, a ...any) { r.skipped = fmt.Sprintf(format, a...) }
func (r *recorder) Fatalf(format string, a ...any) {
	r.fatal = fmt.Sprintf(format, a...)
}

func TestMissingBinary(t *testing.T) {
	for _, tt := range []struct {
		ci         string
		skip, fail bool
	}{
		{"", true, false},
		{"false", true, false},
		{"true", false, true},
	} {
		t.Run("CI="+tt.ci, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			r := &recorder{TB: t}
			missing(r, fmt.Errorf("starting: %w", ErrNoBinary))
			if (r.skipped != "") != tt.skip || (r.fatal != "") != tt.fail {
				t.Errorf("skipped %q, failed %q; want skip %v, fail %v", r.skipped, r.fatal, tt.skip, tt.fail)
			}
			if msg := r.skipped + r.fatal; !strings.Contains(msg, "install-weaviate.sh") {
				t.Errorf("message %q does not say how to install the binary", msg)
			}

			// Other errors are left to the caller.
			r = &recorder{TB: t}
			missing(r, errors.New("port in use"))
			if r.skipped != "" || r.fatal != "" {
				t.Errorf("another error: skipped %q, failed %q", r.skipped, r.fatal)
			}
		})
	}
}

func TestBinaryFromEnv(t *testing.T) {
	t.Setenv(EnvBinary, "/nonexistent/weaviate-server")
	_, err := Binary()
	if err == nil || errors.Is(err, ErrNoBinary) || !strings.Contains(err.Error(), EnvBinary) {
		t.Errorf("Binary with a wrong %s: %v; want an error naming it, not ErrNoBinary", EnvBinary, err)
	}
}

func TestFreePorts(t *testing.T) {
	t.Parallel()
	ports, err := freePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[int]bool)
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Errorf("ports %v: want 6 distinct", ports)
		}
		seen[p] = true
	}
}
