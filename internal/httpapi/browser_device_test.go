package httpapi

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coapgw/coapgw/internal/httpapitest"
)

// consoleCheckExcept fails t for browser errors other than failed loads of the given URL parts
// (a 404 the page expects and handles).
func consoleCheckExcept(t *testing.T, console *httpapitest.Console, expected ...string) {
	t.Helper()
next:
	for _, e := range console.Errors() {
		for _, x := range expected {
			if strings.Contains(e, x) {
				continue next
			}
		}
		t.Errorf("browser: %s", e)
	}
}

// TestBrowserEmptyReport: a device that sent only {} is listed and has a page (its facts, "Nothing
// reported yet"), although its shadow does not exist (404, as in AWS).
func TestBrowserEmptyReport(t *testing.T) {
	f, ts := browserFixture(t, Config{})
	f.store.report("dev-1", "t", time.Now(), map[string]any{"x": 1})
	f.store.report("dev-2", "t", time.Now(), map[string]any{})
	ctx, cancel := httpapitest.Browser(t)
	defer cancel()
	console := httpapitest.WatchConsole(t, ctx)
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/#/things/dev-2")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the device page", `document.querySelector('#device-name') && document.querySelector('#device-name').textContent === 'dev-2' && document.querySelector('.facts').textContent.includes('Messages')`)
	if txt := eval[string](t, ctx, `document.querySelector('#view').innerText`); strings.Contains(txt, "No device named") ||
		!strings.Contains(txt, "Nothing reported yet") {
		t.Errorf("page of a device that sent {}: %q", txt)
	}
	consoleCheckExcept(t, console, "404")
}
