package httpapi

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/coapgw/coapgw/internal/httpapitest"
	"github.com/coapgw/coapgw/internal/registry"
)

// seedFleet fills the store with a small, realistic fleet: three types, half an hour of
// telemetry every 30 s, last-seen times from seconds to hours ago, and two set-aside records.
func seedFleet(s *fakeStore, now time.Time) {
	rng := rand.New(rand.NewPCG(1, 2))
	type kind struct {
		typ, prefix string
		n           int
		state       func(i, step int) map[string]any
	}
	kinds := []kind{
		{"thermostat", "thermo-", 14, func(i, step int) map[string]any {
			x := float64(step) / 8
			return map[string]any{
				"temp":   math.Round((20.5+float64(i%5)*0.7+1.6*math.Sin(x+float64(i))+rng.Float64()*0.3)*10) / 10,
				"hum":    math.Round(41 + 6*math.Cos(x/2+float64(i)) + rng.Float64()*2),
				"mode":   []string{"eco", "comfort", "away"}[i%3],
				"sensor": map[string]any{"battery": 100 - step/12 - i%7},
			}
		}},
		{"power-meter", "meter-", 9, func(i, step int) map[string]any {
			return map[string]any{
				"watts":   math.Round(800 + 450*math.Sin(float64(step)/5+float64(i)) + rng.Float64()*120),
				"voltage": math.Round((229.5+rng.Float64()*2.5)*10) / 10,
				"phase":   i%3 + 1,
			}
		}},
		{"door-sensor", "door-", 7, func(i, step int) map[string]any {
			return map[string]any{"open": (step+i)%9 == 0, "battery": 88 - i}
		}},
	}
	for _, k := range kinds {
		for i := range k.n {
			name := fmt.Sprintf("%s%02d-%04x", k.prefix, i+1, rng.IntN(0xffff))
			// Most devices report now; a few went quiet minutes or hours ago.
			quiet := time.Duration(rng.IntN(20)) * time.Second
			switch i % 7 {
			case 5:
				quiet = time.Duration(3+rng.IntN(40)) * time.Minute
			case 6:
				quiet = time.Duration(2+rng.IntN(20)) * time.Hour
			}
			for step := range 60 {
				at := now.Add(-quiet - time.Duration(59-step)*30*time.Second)
				s.report(name, k.typ, at, k.state(i, step))
			}
		}
	}
	s.setAside(registry.SetAside{GW: "gw-a", Seq: 90412, ReceivedAt: now.Add(-40 * time.Minute), Type: "thermostat",
		Thing: "thermo-03-1a2b", Reason: "payload is not a JSON object", PayloadB64: []byte("temp=21.5\x00\x01"),
		At: now.Add(-40 * time.Minute)})
	s.setAside(registry.SetAside{GW: "gw-a", Seq: 91877, ReceivedAt: now.Add(-7 * time.Minute), Type: "power-meter",
		Thing: "meter-04-77c1", Reason: "shadow would exceed 8 KiB (AWS limit)", Payload: []byte(`{"samples":[1,2,3,4,5,6,7,8,9,10,11,12]}`),
		At: now.Add(-7 * time.Minute)})
}

// browserFixture serves the API on loopback with a live clock; cfg may add access settings.
func browserFixture(t *testing.T, cfg Config) (*fixture, *httptest.Server) {
	t.Helper()
	cfg.Coalesce, cfg.Now = 50*time.Millisecond, time.Now
	f := newFixture(t, cfg)
	started := time.Now().Add(-(3*24*time.Hour + 5*time.Hour + 12*time.Minute))
	var calls atomic.Int64
	f.status = func() Status {
		i := float64(calls.Add(1))
		return Status{Version: "v0.4.0", StartedAt: started, Ready: true,
			AcceptedPerSecond: math.Round(1180 + 160*math.Sin(i/1.7) + 70*math.Cos(i*1.3)),
			SpoolDepth:        int64(40 + 25*math.Sin(i)), SpoolBytes: 3<<20 + 1<<17,
			ProcessorLagSeconds: 0.04 + 0.02*math.Sin(i)}
	}
	return f, f.serve(t)
}

func poll(t testing.TB, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

func eval[T any](t testing.TB, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// chartPixels counts, over every uPlot canvas on the page, the pixels drawn at all and the
// pixels of the series colour (blue, far from the grey of axes and grid).
const chartPixels = `(() => {
  let drawn = 0, line = 0, canvases = 0;
  for (const c of document.querySelectorAll('.chart canvas')) {
    canvases++;
    if (!c.width || !c.height) continue;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i+3] === 0) continue;
      drawn++;
      if (d[i+3] > 200 && d[i+2] > 150 && d[i+2] > d[i] + 60) line++; // opaque blue: the line, not the fill
    }
  }
  return {canvases, drawn, line};
})()`

type pixels struct {
	Canvases int `json:"canvases"`
	Drawn    int `json:"drawn"`
	Line     int `json:"line"`
}

func TestBrowserDashboard(t *testing.T) {
	f, ts := browserFixture(t, Config{})
	seedFleet(f.store, time.Now())
	ctx, cancel := httpapitest.Browser(t)
	defer cancel()
	console := httpapitest.WatchConsole(t, ctx)

	// Load speed is measured by BenchmarkDashboardTenThousandThings, not here: a timed assertion
	// would fail on a busy machine. The page must paint at all.
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the device list", `document.querySelectorAll('#things tbody tr[data-name]').length === 30`)
	poll(t, ctx, "the first paint entry", `performance.getEntriesByName('first-contentful-paint').length > 0`)
	poll(t, ctx, "the live stream", `document.querySelector('#conn').dataset.state === 'live'`)
	poll(t, ctx, "the status panel", `document.querySelector('#st-things').textContent === '30' && document.querySelector('#st-errors').textContent === '2' && document.querySelector('#st-types').textContent === '3 types · 1,800 messages'`)

	// A new device appears without a reload.
	eval[bool](t, ctx, `window.__noReload = true`)
	f.store.report("new-device-42", "thermostat", time.Now(), map[string]any{"temp": 23.25, "hum": 44})
	f.api.Notify("new-device-42")
	poll(t, ctx, "the new device", `!!document.querySelector('#things tbody tr[data-name="new-device-42"]')`)
	poll(t, ctx, "the things count", `document.querySelector('#st-things').textContent === '31'`)
	if !eval[bool](t, ctx, `window.__noReload === true`) {
		t.Fatal("the page reloaded to show the new device")
	}
	row := eval[string](t, ctx, `document.querySelector('#things tbody tr[data-name="new-device-42"]').innerText`)
	if !strings.Contains(row, "thermostat") || !(strings.Contains(row, "just now") || strings.Contains(row, "s ago")) {
		t.Errorf("new row %q", row)
	}
	// Relative times tick.
	poll(t, ctx, "last seen to tick", `/^[1-9]\d* s ago$/.test(document.querySelector('#things tbody tr[data-name="new-device-42"] .rel').textContent)`)

	// Filter by type and by prefix.
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("#f-type"), "door-sensor")); err != nil {
		t.Fatal(err)
	}
	eval[bool](t, ctx, `document.querySelector('#f-type').dispatchEvent(new Event('change'))`)
	poll(t, ctx, "the type filter", `[...document.querySelectorAll('#things tbody tr[data-name]')].every(r => r.dataset.name.startsWith('door-')) && document.querySelectorAll('#things tbody tr[data-name]').length === 7`)
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS("#f-type"), ""),
		chromedp.SendKeys(chromedp.CSS("#f-prefix"), "meter-0"),
	); err != nil {
		t.Fatal(err)
	}
	eval[bool](t, ctx, `document.querySelector('#f-type').dispatchEvent(new Event('change'))`)
	poll(t, ctx, "the prefix filter", `document.querySelectorAll('#things tbody tr[data-name]').length === 9 && location.hash === '#/?prefix=meter-0'`)

	// Back to all; open the new device by clicking it.
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/#/")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the list again", `!!document.querySelector('#things tbody tr[data-name="new-device-42"]')`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#things tbody tr[data-name="new-device-42"] a`))); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the device page", `location.hash === '#/things/new-device-42' && !!document.querySelector('#state tr[data-prop="temp"]')`)
	if v := eval[string](t, ctx, `document.querySelector('#state tr[data-prop="temp"] .value').textContent`); v != "23.25" {
		t.Errorf("temp shows %q, want 23.25", v)
	}

	// More values arrive live; the chart draws them.
	for i := range 20 {
		f.store.report("new-device-42", "thermostat", time.Now().Add(time.Duration(i-20)*time.Minute),
			map[string]any{"temp": 21 + 2*math.Sin(float64(i)/3), "hum": 40 + float64(i%5)})
	}
	f.store.report("new-device-42", "thermostat", time.Now(), map[string]any{"temp": 24.5})
	f.api.Notify("new-device-42")
	poll(t, ctx, "the live value", `document.querySelector('#state tr[data-prop="temp"] .value').textContent === '24.5'`)
	poll(t, ctx, "two charts", `document.querySelectorAll('.chart canvas').length === 2`)
	poll(t, ctx, "chart data", `document.querySelector('.chart-card[data-prop="temp"] .n').textContent === '22 points'`)
	var px pixels
	for deadline := time.Now().Add(5 * time.Second); ; {
		px = eval[pixels](t, ctx, chartPixels)
		if px.Line > 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("charts: %+v", px)
	if px.Canvases != 2 || px.Drawn < 2000 || px.Line < 200 {
		t.Errorf("charts not drawn: %+v", px)
	}
	httpapitest.Screenshot(t, ctx, "device.png")

	// A device with nested and non-numeric properties: one row per leaf, charts for numbers.
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/#/things/thermo-02-b874")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "a seeded device", `document.querySelectorAll('.chart canvas').length === 3 && !!document.querySelector('#state tr[data-prop="sensor.battery"]')`)
	if v := eval[string](t, ctx, `document.querySelector('#state tr[data-prop="mode"] .value').textContent`); v != "comfort" {
		t.Errorf("mode shows %q", v)
	}
	httpapitest.Screenshot(t, ctx, "device-fleet.png")

	// Set-aside records, from the status card.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#st-errors-card"))); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "set-aside records", `document.querySelectorAll('#errors tbody tr[data-seq]').length === 2`)
	if txt := eval[string](t, ctx, `document.querySelector('#errors tbody').innerText`); !strings.Contains(txt, "shadow would exceed 8 KiB") ||
		!strings.Contains(txt, "payload is not a JSON object") {
		t.Errorf("records %q", txt)
	}
	httpapitest.Screenshot(t, ctx, "errors.png")

	// Phone width: nothing wider than the screen.
	if err := chromedp.Do(ctx,
		chromedp.EmulateViewport(390, 844),
		chromedp.Navigate(ts.URL+"/#/"),
	); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the phone list", `document.querySelectorAll('#things tbody tr[data-name]').length > 0`)
	if w := eval[int](t, ctx, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("page is %d px wide on a 390 px screen", w)
	}
	httpapitest.Screenshot(t, ctx, "dashboard-phone.png")
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/#/things/new-device-42")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the phone device page", `document.querySelectorAll('.chart canvas').length === 2`)
	if w := eval[int](t, ctx, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("device page is %d px wide on a 390 px screen", w)
	}
	httpapitest.Screenshot(t, ctx, "device-phone.png")

	// Dark scheme.
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx,
		chromedp.EmulateViewport(int64(httpapitest.Viewport.Width), int64(httpapitest.Viewport.Height)),
		chromedp.Navigate(ts.URL+"/#/things/new-device-42"),
	); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the dark device page", `document.querySelectorAll('.chart canvas').length === 2 && getComputedStyle(document.body).backgroundColor === 'rgb(13, 17, 23)'`)
	time.Sleep(200 * time.Millisecond)
	httpapitest.Screenshot(t, ctx, "device-dark.png")

	// Back to light and the list, with a few status samples in the throughput sparkline.
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/#/")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, input.DispatchMouseEvent, input.DispatchMouseEventParams{Type: input.DispatchMouseEventTypeMouseMoved, X: 2, Y: 600}); err != nil {
		t.Fatal(err) // no hover on the card clicked before
	}
	poll(t, ctx, "the sparkline", `document.querySelector('.spark-line').getAttribute('d').split('L').length >= 4 && document.querySelectorAll('#things tbody tr[data-name]').length === 31`)
	httpapitest.Screenshot(t, ctx, "dashboard.png")

	console.Check(t)
}

func TestBrowserTenThousandThings(t *testing.T) {
	ctx, cancel := httpapitest.Browser(t)
	defer cancel()
	f, ts := browserFixture(t, Config{})
	now := time.Now()
	for i := range 10000 {
		f.store.report(fmt.Sprintf("dev-%05d", i), []string{"alpha", "beta", "gamma"}[i%3],
			now.Add(-time.Duration(i)*time.Second), map[string]any{"v": i})
	}
	console := httpapitest.WatchConsole(t, ctx)

	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the first page", `document.querySelectorAll('#things tbody tr[data-name]').length > 0`)
	rows := eval[int](t, ctx, `document.querySelectorAll('#things tbody tr').length`)
	total := eval[string](t, ctx, `document.querySelector('#things-total').textContent`)
	if rows != 50 || total != "10,000 devices" {
		t.Errorf("rows %d, total %q; want one page of 50 of 10,000", rows, total)
	}
	if first := eval[string](t, ctx, `document.querySelector('#things tbody tr').dataset.name`); first != "dev-00000" {
		t.Errorf("first row %q, want the newest", first)
	}

	// Paging.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#pg-next"))); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the second page", `document.querySelector('#things tbody tr').dataset.name === 'dev-00050' && document.querySelector('#pg-range').textContent === '51–100 of 10,000'`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#pg-prev"))); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the first page again", `document.querySelector('#things tbody tr').dataset.name === 'dev-00000' && document.querySelector('#pg-prev').disabled`)
	console.Check(t)
}

func TestBrowserPollingFallback(t *testing.T) {
	f, ts := browserFixture(t, Config{})
	f.store.report("first", "t", time.Now(), map[string]any{"x": 1})
	ctx, cancel := httpapitest.Browser(t)
	defer cancel()
	console := httpapitest.WatchConsole(t, ctx)
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "live", `document.querySelector('#conn').dataset.state === 'live'`)

	// The stream goes away (as on shutdown, or past MaxClients): the page polls instead.
	f.api.Close()
	poll(t, ctx, "polling", `document.querySelector('#conn').dataset.state === 'polling'`)
	f.store.report("second", "t", time.Now(), map[string]any{"x": 2}) // no Notify
	poll(t, ctx, "the polled device", `!!document.querySelector('#things tbody tr[data-name="second"]')`)

	// The refused reconnection is the only thing the browser may complain about.
	for _, e := range console.Errors() {
		if !strings.Contains(e, "/api/events") && !strings.Contains(e, "EventSource") && !strings.Contains(e, "503") {
			t.Errorf("browser: %s", e)
		}
	}
}

// TestBrowserLogin runs the gateway as if it listened beyond loopback: the dashboard asks for the
// token once, refuses a wrong one, and with the right one shows the devices and goes live; the
// session survives a reload and is not readable by scripts.
func TestBrowserLogin(t *testing.T) {
	f, ts := browserFixture(t, Config{Token: testToken, Public: true})
	seedFleet(f.store, time.Now())
	ctx, cancel := httpapitest.Browser(t)
	defer cancel()
	console := httpapitest.WatchConsole(t, ctx)

	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the login form", `!document.querySelector('#login').hidden && document.activeElement === document.querySelector('#login-token')`)
	if n := eval[int](t, ctx, `document.querySelectorAll('#things tbody tr[data-name]').length`); n != 0 {
		t.Fatalf("%d devices shown before login", n)
	}
	httpapitest.Screenshot(t, ctx, "login.png")

	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#login-token"), "not-the-token"),
		chromedp.Click(chromedp.CSS("#login-submit")),
	); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the wrong-token message", `document.querySelector('#login-error').textContent === 'Wrong token.' && !document.querySelector('#login').hidden`)

	eval[string](t, ctx, `document.querySelector('#login-token').value = ''`)
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#login-token"), testToken+"\r")); err != nil { // Enter submits
		t.Fatal(err)
	}
	poll(t, ctx, "the device list", `document.querySelector('#login').hidden && document.querySelectorAll('#things tbody tr[data-name]').length === 30`)
	poll(t, ctx, "the status panel", `document.querySelector('#st-things').textContent === '30'`)
	poll(t, ctx, "the live stream", `document.querySelector('#conn').dataset.state === 'live'`)
	if c := eval[string](t, ctx, `document.cookie`); strings.Contains(c, SessionCookie) {
		t.Errorf("scripts can read the session cookie: %q", c)
	}

	// Live updates come through the stream opened with the session.
	f.store.report("new-device-42", "thermostat", time.Now(), map[string]any{"temp": 23.25})
	f.api.Notify("new-device-42")
	poll(t, ctx, "the new device", `!!document.querySelector('#things tbody tr[data-name="new-device-42"]')`)
	httpapitest.Screenshot(t, ctx, "dashboard-login.png")

	// Once per session: a reload does not ask again.
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the list after a reload", `document.querySelectorAll('#things tbody tr[data-name]').length === 31 && document.querySelector('#conn').dataset.state === 'live'`)
	if !eval[bool](t, ctx, `document.querySelector('#login').hidden`) {
		t.Error("the login form came back after a reload")
	}

	// The 401s before the login are the only thing the browser may complain about.
	for _, e := range console.Errors() {
		if !strings.Contains(e, "401") {
			t.Errorf("browser: %s", e)
		}
	}
}
