// Package httpapitest drives the dashboard in a real browser for tests: headless Debian chromium
// through chromedp, a collector of console errors, uncaught exceptions and failed requests, and
// full-page screenshots saved as test artifacts.
//
// A test that needs the browser calls [Browser]; when chromium is missing the test is skipped, or
// fails when COAPGW_REQUIRE_PEERS is set (as scripts/test.sh does after installing it).
// COAPGW_CHROMIUM overrides the executable, COAPGW_ARTIFACTS the screenshot directory.
//
//	ctx, cancel := httpapitest.Browser(t)
//	defer cancel()
//	console := httpapitest.WatchConsole(t, ctx) // before the first navigation
//	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil { ... }
//	...
//	httpapitest.Screenshot(t, ctx, "dashboard.png")
//	console.Check(t)
package httpapitest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/dom"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// DefaultExecPath is Debian's chromium launcher (apt-get install chromium).
const DefaultExecPath = "/usr/bin/chromium"

// Viewport is the window size of the browser Browser starts.
var Viewport = struct{ Width, Height int }{1280, 900}

// ExecPath returns the chromium to run: $COAPGW_CHROMIUM, DefaultExecPath, or chromium on PATH;
// "" when there is none (also when $COAPGW_CHROMIUM names a file that does not exist).
func ExecPath() string {
	if p := os.Getenv("COAPGW_CHROMIUM"); p != "" {
		if isFile(p) {
			return p
		}
		return ""
	}
	if isFile(DefaultExecPath) {
		return DefaultExecPath
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// RequirePeers reports whether a missing test peer (chromium here) must fail the test instead
// of skipping it.
func RequirePeers() bool { return os.Getenv("COAPGW_REQUIRE_PEERS") != "" }

// Browser starts headless chromium with a fresh profile and returns a chromedp context for one
// tab, already open. cancel (also run by t.Cleanup) closes the browser and waits for it.
func Browser(t testing.TB) (context.Context, context.CancelFunc) {
	t.Helper()
	path := ExecPath()
	if path == "" {
		msg := "chromium not found (apt-get install -y chromium, or set COAPGW_CHROMIUM)"
		if p := os.Getenv("COAPGW_CHROMIUM"); p != "" {
			msg = "COAPGW_CHROMIUM=" + p + ": no such file"
		}
		if RequirePeers() {
			t.Fatal(msg + "; COAPGW_REQUIRE_PEERS is set")
		}
		t.Skip(msg)
	}
	profile, err := os.MkdirTemp("", "coapgw-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(Viewport.Width, Viewport.Height),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
		chromedp.Flag("no-proxy-server", true),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithErrorf(t.Logf))
	var once sync.Once
	cancel := func() {
		once.Do(func() {
			cancelTab()
			cancelAlloc() // waits for the browser process to exit
			_ = os.RemoveAll(profile)
		})
	}
	t.Cleanup(cancel)
	// Start the browser now, without a deadline on this first call (it would bound the browser's
	// life), so that a broken install fails here with a clear message.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err = <-started:
	case <-time.After(60 * time.Second):
		err = errors.New("no answer within 60s")
	}
	if err != nil {
		cancel()
		t.Fatalf("start chromium %s: %v", path, err)
	}
	return ctx, cancel
}

// Console collects what a person would call errors on the page: console.error and
// console.assert calls, uncaught exceptions and unhandled rejections, error entries of the
// browser log (CSP violations, failed resource loads), and requests that failed or were answered
// with a status of 400 or more. Canceled requests (a navigation or a closed EventSource) are not
// errors.
type Console struct {
	mu       sync.Mutex
	errs     []string
	urls     map[network.RequestID]string
	messages int
}

// WatchConsole starts collecting on the tab of ctx; call it before navigating.
func WatchConsole(t testing.TB, ctx context.Context) *Console {
	t.Helper()
	c := &Console{urls: map[network.RequestID]string{}}
	if err := chromedp.Listen(ctx, c.event); err != nil {
		t.Fatalf("listen to the console: %v", err)
	}
	return c
}

func (c *Console) add(format string, args ...any) {
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
}

// event runs on chromedp's reader goroutine: no commands, no blocking.
func (c *Console) event(ev any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		c.messages++
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			c.add("console.%s: %s%s", ev.Type, argsText(ev.Args), where(ev.StackTrace))
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			text += " " + d.Exception.Description
		}
		c.add("exception: %s (%s:%d:%d)", text, d.URL, d.LineNumber+1, d.ColumnNumber+1)
	case *log.EventEntryAdded:
		if e := ev.Entry; e != nil && e.Level == log.EntryLevelError {
			c.add("log %s: %s %s", e.Source, e.Text, e.URL)
		}
	case *network.EventRequestWillBeSent:
		if ev.Request != nil {
			c.urls[ev.RequestID] = ev.Request.URL
		}
	case *network.EventResponseReceived:
		if r := ev.Response; r != nil && r.Status >= 400 {
			c.add("HTTP %d %s", r.Status, r.URL)
		}
	case *network.EventLoadingFailed:
		if !ev.Canceled {
			c.add("request failed: %s %s %s", ev.ErrorText, ev.BlockedReason, c.urls[ev.RequestID])
		}
	}
}

func argsText(args []*runtime.RemoteObject) string {
	parts := make([]string, 0, len(args))
	for _, a := range args {
		switch {
		case a == nil:
		case a.Type == runtime.RemoteObjectTypeString:
			if s, err := strconv.Unquote(string(a.Value)); err == nil {
				parts = append(parts, s)
			} else {
				parts = append(parts, string(a.Value))
			}
		case len(a.Value) > 0:
			parts = append(parts, string(a.Value))
		case a.UnserializableValue != "":
			parts = append(parts, string(a.UnserializableValue))
		default:
			parts = append(parts, a.Description)
		}
	}
	return strings.Join(parts, " ")
}

func where(st *runtime.StackTrace) string {
	if st == nil || len(st.CallFrames) == 0 {
		return ""
	}
	f := st.CallFrames[0]
	return fmt.Sprintf(" (%s:%d:%d)", f.URL, f.LineNumber+1, f.ColumnNumber+1)
}

// Errors returns the errors seen so far.
func (c *Console) Errors() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.errs...)
}

// Check fails t with every error seen so far.
func (c *Console) Check(t testing.TB) {
	t.Helper()
	for _, e := range c.Errors() {
		t.Errorf("browser: %s", e)
	}
}

// ArtifactsDir is where screenshots go: $COAPGW_ARTIFACTS (created if needed), or t.TempDir().
func ArtifactsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("COAPGW_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts dir: %v", err)
	}
	return dir
}

// Screenshot saves a PNG of the whole page (beyond the viewport) of ctx's tab as name in
// ArtifactsDir and returns its path.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, fullPagePNG())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(ArtifactsDir(t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	t.Logf("screenshot %s (%d bytes)", path, len(png))
	return path
}

func fullPagePNG() chromedp.Action[[]byte] {
	return func(ctx context.Context, tg *chromedp.Target) ([]byte, error) {
		m, err := cdp.Call(ctx, tg, page.GetLayoutMetrics, cdp.Empty{})
		if err != nil {
			return nil, err
		}
		size := m.CSSContentSize
		if size == nil {
			size = &dom.Rect{Width: float64(Viewport.Width), Height: float64(Viewport.Height)}
		}
		yes := true
		r, err := cdp.Call(ctx, tg, page.CaptureScreenshot, page.CaptureScreenshotParams{
			Format:                page.CaptureScreenshotFormatPng,
			Clip:                  &page.Viewport{Width: size.Width, Height: size.Height, Scale: 1},
			FromSurface:           &yes,
			CaptureBeyondViewport: &yes,
		})
		if err != nil {
			return nil, err
		}
		return r.Data, nil
	}
}
