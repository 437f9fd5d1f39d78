package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromiumPath is where scripts/install-chromium.sh puts Chromium.
const chromiumPath = "/usr/bin/chromium"

// needChromium skips the test when Chromium is missing, except in CI,
// where a missing browser is a broken setup, not a reason to skip.
func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err == nil {
		return
	}
	msg := "Chromium is not installed at " + chromiumPath + ": the browser test needs it (install it with scripts/install-chromium.sh --yes)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip("SKIPPING THE BROWSER TEST: " + msg)
}

// browser is a headless Chromium with a fresh profile, and what the page
// did in it: exceptions thrown and every URL requested.
type browser struct {
	ctx context.Context

	mu         sync.Mutex
	exceptions []string
	requested  []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox, // we run as root here
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })

	b := &browser{ctx: ctx}
	chromedp.ListenTarget(ctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg = d.Exception.Description
			}
			b.exceptions = append(b.exceptions, msg)
		case *network.EventRequestWillBeSent:
			b.requested = append(b.requested, ev.Request.URL)
		}
	})
	// Start the browser now, outside any step's deadline: the first Run
	// ties the browser's life to the context it is given.
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return b
}

// step runs actions with a deadline, failing the test with what was being done.
func (b *browser) step(t *testing.T, what string, timeout time.Duration, actions ...chromedp.Action) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// screenshot saves the whole page as a PNG in dir and logs where.
func (b *browser) screenshot(t *testing.T, dir, name string) {
	t.Helper()
	var png []byte
	b.step(t, "taking a screenshot", 30*time.Second, chromedp.FullScreenshot(&png, 100))
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// TestBrowserAsksAndSeesTheAnswer drives the web page in a real headless
// Chromium against the real system (dev auth, a worker, the alerter, the
// sample corpus): dev sign-in as alice, a question, the status followed
// live over the event stream to succeeded, the answer with its sources,
// alice's limits and spend; a second question refused by the rate limit,
// shown with its problem detail and when to retry; then an
// administrator's view of the day's usage by user and model. Screenshots go to t.TempDir(), or to
// TOLLGATE_SCREENSHOT_DIR when set (to keep them).
func TestBrowserAsksAndSeesTheAnswer(t *testing.T) {
	needChromium(t)
	shots := os.Getenv("TOLLGATE_SCREENSHOT_DIR")
	if shots == "" {
		shots = t.TempDir()
	}

	// A bucket of one token, so alice's second question is refused.
	s := startSystem(t, map[string]string{"AUTH_MODE": "dev", "TOKEN_BUCKET_CAPACITY": "1"})
	alerter := start(t, "alerter", s.env)
	alerter.waitLog("alerter started", time.Minute)

	b := newBrowser(t)
	const question = "How many requests can I make per day?"

	// Dev sign-in: the page finds the dev issuer and offers its button.
	var who string
	var adminHidden bool
	b.step(t, "signing in as alice with a dev token", 30*time.Second,
		chromedp.Navigate(s.apiURL+"/"),
		chromedp.WaitVisible(`#dev-token`, chromedp.ByQuery),
		chromedp.SetValue(`#dev-user`, "alice", chromedp.ByQuery),
		chromedp.Click(`#dev-token`, chromedp.ByQuery),
		chromedp.WaitVisible(`#question`, chromedp.ByQuery),
		chromedp.WaitVisible(`#me-daily`, chromedp.ByQuery),
		chromedp.Text(`#who`, &who, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelector('#admin').hidden`, &adminHidden),
	)
	if who != "alice" {
		t.Fatalf("signed in as %q, want alice", who)
	}
	if !adminHidden {
		t.Error("alice is not an administrator, but the usage section is shown")
	}

	// Ask, and wait for the answer and a source on screen.
	var answer, status, firstSource string
	var history []string
	b.step(t, "asking and waiting for the answer", time.Minute,
		chromedp.SendKeys(`#question`, question, chromedp.ByQuery),
		chromedp.Click(`#ask-button`, chromedp.ByQuery),
		chromedp.WaitVisible(`#answer p`, chromedp.ByQuery),
		chromedp.WaitVisible(`#sources li`, chromedp.ByQuery),
		chromedp.Text(`#answer`, &answer, chromedp.ByQuery),
		chromedp.Text(`#sources li`, &firstSource, chromedp.ByQuery),
		chromedp.Text(`#status`, &status, chromedp.ByQuery),
		chromedp.Evaluate(`[...document.querySelectorAll('#status-history li')].map(li => li.dataset.status)`, &history),
	)
	if !strings.Contains(answer, "30") {
		t.Errorf("answer on screen does not give the daily limit of 30: %q", answer)
	}
	if !strings.Contains(firstSource, ".md") || len(strings.TrimSpace(firstSource)) < 20 {
		t.Errorf("first source on screen %q: want a title, its file and a snippet", firstSource)
	}
	if !strings.HasPrefix(status, "succeeded") {
		t.Errorf("status on screen %q, want succeeded", status)
	}
	// The 202 shows queued; the stream adds what followed, in order, once each.
	if len(history) < 2 || history[0] != "queued" || history[len(history)-1] != "succeeded" ||
		!slices.IsSortedFunc(history, func(a, b string) int { return statusOrder[a] - statusOrder[b] }) ||
		len(slices.Compact(slices.Clone(history))) != len(history) {
		t.Errorf("status history on screen %v, want queued, [running,] succeeded", history)
	}

	// alice's limits: one request of 30 today, her one token taken, and,
	// once the alerter has folded the usage into the ledger, what it cost.
	var tokens, daily string
	b.step(t, "reading alice's limits", 30*time.Second,
		chromedp.Poll(`document.querySelector('#me-daily').textContent.startsWith('1 of 30')`, nil, chromedp.WithPollingTimeout(20*time.Second)),
		chromedp.Text(`#me-tokens`, &tokens, chromedp.ByQuery),
		chromedp.Text(`#me-daily`, &daily, chromedp.ByQuery),
	)
	if tokens != "0 of 1" || daily != "1 of 30 used" {
		t.Errorf("limits on screen: tokens %q, today %q; want 0 of 1 and 1 of 30 used", tokens, daily)
	}
	spent := b.refreshUntil(t, `#me-refresh`, `#me-spent`, nonZeroUSD)
	t.Logf("on screen: status history %v, answer %q, spent today %s", history, answer, spent)
	b.screenshot(t, shots, "tollgate-alice.png")

	// A second question: 429, shown as the problem's title and detail, with
	// the time to retry, and the Ask button held until then.
	var problem, button string
	b.step(t, "asking a second question", 30*time.Second,
		chromedp.SetValue(`#question`, "What happens when the budget runs out?", chromedp.ByQuery),
		chromedp.Click(`#ask-button`, chromedp.ByQuery),
		chromedp.WaitVisible(`#problem p`, chromedp.ByQuery),
		chromedp.Text(`#problem`, &problem, chromedp.ByQuery),
		chromedp.Text(`#ask-button`, &button, chromedp.ByQuery),
	)
	for _, want := range []string{"Asking: Rate limit exceeded (429)", "burst limit of 1 requests", "You can try again at"} {
		if !strings.Contains(problem, want) {
			t.Errorf("problem on screen %q does not say %q", problem, want)
		}
	}
	if !strings.HasPrefix(button, "Ask (wait ") {
		t.Errorf("Ask button reads %q while rate limited, want a countdown", button)
	}
	b.screenshot(t, shots, "tollgate-limited.png")

	// An administrator sees the day's usage, alice's request in it.
	b.step(t, "signing in as an administrator", 30*time.Second,
		chromedp.Click(`#signout`, chromedp.ByQuery),
		chromedp.WaitVisible(`#dev-token`, chromedp.ByQuery),
		chromedp.SetValue(`#dev-user`, "root", chromedp.ByQuery),
		chromedp.Click(`#dev-admin`, chromedp.ByQuery),
		chromedp.Click(`#dev-token`, chromedp.ByQuery),
		chromedp.WaitVisible(`#admin-users tbody td`, chromedp.ByQuery),
	)
	var users, models string
	b.step(t, "reading today's usage", 10*time.Second,
		chromedp.Text(`#admin-users tbody`, &users, chromedp.ByQuery),
		chromedp.Text(`#admin-models tbody`, &models, chromedp.ByQuery),
	)
	if !regexp.MustCompile(`alice\s+1\s+\$0\.\d+`).MatchString(users) {
		t.Errorf("usage by user on screen %q, want alice with 1 request and its cost", users)
	}
	if !regexp.MustCompile(`gpt-4o-mini\s+1\s+[\d,]+\s+[\d,]+\s+\$0\.\d+`).MatchString(models) {
		t.Errorf("usage by model on screen %q, want gpt-4o-mini with 1 request, its tokens and cost", models)
	}
	b.screenshot(t, shots, "tollgate-admin.png")

	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.exceptions) > 0 {
		t.Errorf("the page threw: %q", b.exceptions)
	}
	for _, u := range b.requested {
		if !strings.HasPrefix(u, s.apiURL+"/") && !strings.HasPrefix(u, "data:") {
			t.Errorf("the page loaded %s, which is not from the api", u)
		}
	}
}

var statusOrder = map[string]int{"queued": 0, "running": 1, "succeeded": 2, "failed": 2}

var nonZeroUSD = regexp.MustCompile(`^\$0\.\d*[1-9]\d*$`)

// refreshUntil clicks button until the text of sel matches want, and returns it.
func (b *browser) refreshUntil(t *testing.T, button, sel string, want *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var text string
	for {
		b.step(t, "reading "+sel, 10*time.Second, chromedp.Text(sel, &text, chromedp.ByQuery))
		if want.MatchString(text) {
			return text
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s shows %q, want it to match %s", sel, text, want)
		}
		b.step(t, "clicking "+button, 10*time.Second, chromedp.Click(button, chromedp.ByQuery), chromedp.Sleep(200*time.Millisecond))
	}
}
