package httpapi

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coapgw/coapgw/internal/httpapitest"
	"github.com/coapgw/coapgw/internal/registry"
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

// TestBrowserChartGapsAndFreshness: a pause in the data breaks the chart's line, the time axis
// has one format (HH:MM:SS within a day, MM-DD HH:MM beyond), and the freshness dot compares the
// silence with the device's own reporting interval.
func TestBrowserChartGapsAndFreshness(t *testing.T) {
	f, ts := browserFixture(t, Config{})
	now := time.Now()
	// Every 5 minutes for two hours, silent from 80 to 40 minutes ago, last seen 3 minutes ago.
	for m := 123; m >= 3; m -= 5 {
		if m < 80 && m > 40 {
			continue
		}
		f.store.report("slow-1", "meter", now.Add(-time.Duration(m)*time.Minute), map[string]any{"watts": float64(m)})
	}
	// Every 30 s for half an hour, last seen 3 minutes ago.
	for s := 1800 + 180; s >= 180; s -= 30 {
		f.store.report("chatty-1", "meter", now.Add(-time.Duration(s)*time.Second), map[string]any{"watts": float64(s)})
	}
	// Every 6 hours for three days.
	for h := 72; h >= 0; h -= 6 {
		f.store.report("daily-1", "meter", now.Add(-time.Duration(h)*time.Hour), map[string]any{"watts": float64(h)})
	}
	ctx, cancel := httpapitest.Browser(t)
	defer cancel()
	console := httpapitest.WatchConsole(t, ctx)
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the list", `document.querySelectorAll('#things tbody tr[data-name]').length === 3`)
	dot := func(name string) string {
		return eval[string](t, ctx, `document.querySelector('#things tbody tr[data-name="`+name+`"] .dot').className`)
	}
	// The old rule (fresh under 60 s) made both orange.
	if d := dot("slow-1"); d != "dot fresh" {
		t.Errorf("slow-1 (every 5 min, seen 3 min ago): %q, want fresh", d)
	}
	if d := dot("chatty-1"); d != "dot recent" {
		t.Errorf("chatty-1 (every 30 s, seen 3 min ago): %q, want recent", d)
	}

	ticks := `document.querySelector('.chart').uplot.axes[0]._values`
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/#/things/slow-1")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the chart", `!!document.querySelector('.chart-card[data-prop="watts"]') && document.querySelector('.chart').uplot.axes[0]._values !== null`)
	if g := eval[string](t, ctx, `document.querySelector('.chart-card[data-prop="watts"]').dataset.gaps`); g != "1" {
		t.Errorf("slow-1 chart has %s gaps, want 1", g)
	}
	if n := eval[int](t, ctx, `document.querySelector('.chart').uplot.data[1].filter(v => v === null).length`); n != 1 {
		t.Errorf("slow-1 chart data has %d null points, want 1", n)
	}
	if d := eval[string](t, ctx, `document.querySelector('.facts .dot').className`); d != "dot fresh" {
		t.Errorf("slow-1 page dot %q, want fresh", d)
	}
	httpapitest.Screenshot(t, ctx, "device-gap.png")
	within := eval[[]string](t, ctx, ticks)
	if len(within) == 0 {
		t.Error("no ticks on the two-hour axis")
	}
	for _, v := range within {
		if !regexp.MustCompile(`^\d\d:\d\d:\d\d$`).MatchString(v) {
			t.Errorf("two-hour axis tick %q, want HH:MM:SS (all ticks %q)", v, within)
		}
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/#/things/chatty-1")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the chatty chart", `document.querySelector('.chart-card[data-prop="watts"] .n') && document.querySelector('.chart-card[data-prop="watts"] .n').textContent === '61 points'`)
	if g := eval[string](t, ctx, `document.querySelector('.chart-card[data-prop="watts"]').dataset.gaps`); g != "0" {
		t.Errorf("chatty-1 chart has %s gaps, want 0", g)
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/#/things/daily-1")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the three-day chart", `document.querySelector('.chart-card[data-prop="watts"] .n') && document.querySelector('.chart-card[data-prop="watts"] .n').textContent === '13 points' && document.querySelector('.chart').uplot.axes[0]._values !== null`)
	beyond := eval[[]string](t, ctx, ticks)
	if len(beyond) == 0 {
		t.Error("no ticks on the three-day axis")
	}
	for _, v := range beyond {
		if !regexp.MustCompile(`^\d\d-\d\d \d\d:\d\d$`).MatchString(v) {
			t.Errorf("three-day axis tick %q, want MM-DD HH:MM (all ticks %q)", v, beyond)
		}
	}
	httpapitest.Screenshot(t, ctx, "device-days.png")
	console.Check(t)
}

// TestBrowserLoadingAndCSV: pages say "Loading…" until their data arrives, reported values show
// their SenML unit, and the device page links the history it shows as CSV.
func TestBrowserLoadingAndCSV(t *testing.T) {
	f, ts := browserFixture(t, Config{})
	f.store.report("dev-1", "t", time.Now().Add(-time.Minute), map[string]any{"x": 1.5})
	f.store.report("dev-1", "t", time.Now(), map[string]any{"x": 2})
	f.store.things["dev-1"].units = map[string]string{"x": "W"}
	f.store.gate = make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(f.store.gate) }) }
	defer open()
	ctx, cancel := httpapitest.Browser(t)
	defer cancel()
	console := httpapitest.WatchConsole(t, ctx)
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/#/things/dev-1")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the loading state", `document.querySelector('#state tr.loading') && document.querySelector('#history-loading') && document.querySelector('#state').innerText.includes('Loading…')`)
	open()
	poll(t, ctx, "the data", `!!document.querySelector('#state tr[data-prop="x"]') && !!document.querySelector('.chart-card[data-prop="x"]')`)
	if n := eval[int](t, ctx, `document.querySelectorAll('.loading').length`); n != 0 {
		t.Errorf("%d loading placeholders left after the data arrived", n)
	}
	// The unit of the history is shown with the reported value too.
	poll(t, ctx, "the value with its unit", `document.querySelector('#state tr[data-prop="x"] .value').textContent === '2 W' && document.querySelector('.chart-card[data-prop="x"] .latest').textContent === '2 W'`)
	if href := eval[string](t, ctx, `document.querySelector('#history-csv').getAttribute('href')`); href != "api/things/dev-1/history.csv" {
		t.Errorf("CSV link %q", href)
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch(document.querySelector('#history-csv').href).then(r => r.text())`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(got), "\n"); len(lines) != 3 || strings.TrimSpace(lines[0]) != "time,property,value,unit" ||
		!strings.Contains(lines[1], ",x,1.5,W") || !strings.Contains(lines[2], ",x,2,W") {
		t.Errorf("CSV download %q", got)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`.seg button[data-range="1h"]`))); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the CSV link of the range", `document.querySelector('#history-csv').getAttribute('href') === 'api/things/dev-1/history.csv?since=1h'`)
	console.Check(t)
}

// TestBrowserSetAsideGroups: the set-aside page counts the records by reason, and a reason's
// records can be dismissed (after logging in: a write needs the token on loopback too).
func TestBrowserSetAsideGroups(t *testing.T) {
	f, ts := browserFixture(t, Config{Token: testToken})
	now := time.Now()
	for i := range 40 {
		f.store.setAside(registry.SetAside{GW: "gw-a", Seq: uint64(i + 1), Type: "t", Thing: "dev-1",
			Reason: "payload is not a JSON object", At: now.Add(time.Duration(i-60) * time.Second)})
	}
	for i := range 2 {
		f.store.setAside(registry.SetAside{GW: "gw-a", Seq: uint64(i + 100), Type: "t", Thing: "dev-2",
			Reason: "shadow would exceed 8 KiB (AWS limit)", At: now.Add(time.Duration(i-10) * time.Second)})
	}
	ctx, cancel := httpapitest.Browser(t)
	defer cancel()
	console := httpapitest.WatchConsole(t, ctx)
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/#/errors")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the groups", `document.querySelectorAll('#reasons tr[data-reason]').length === 2`)
	if got := eval[string](t, ctx, `[...document.querySelectorAll('#reasons tr[data-reason]')].map(r => r.dataset.reason + '=' + r.querySelector('.count').textContent).join('; ')`); got != "payload is not a JSON object=40; shadow would exceed 8 KiB (AWS limit)=2" {
		t.Errorf("groups %q", got)
	}
	login := fmt.Sprintf(`fetch('api/login', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({token: %q})}).then(r => r.status)`, testToken)
	if st, err := chromedp.Run(ctx, chromedp.Evaluate[float64](login, chromedp.EvalAwaitPromise)); err != nil || st != 204 {
		t.Fatalf("login: %v %v", st, err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#reasons tr[data-reason="payload is not a JSON object"] .dismiss`))); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the dismissal", `document.querySelector('#reasons-msg').textContent === 'Dismissed 40 records.' && document.querySelectorAll('#reasons tr[data-reason]').length === 1 && document.querySelectorAll('#errors tbody tr[data-seq]').length === 2`)
	f.store.mu.Lock()
	n := len(f.store.setAsides)
	f.store.mu.Unlock()
	if n != 2 {
		t.Errorf("%d records held after the dismissal, want 2", n)
	}
	httpapitest.Screenshot(t, ctx, "errors-grouped.png")
	console.Check(t)
}

// TestBrowserSortDevices: the list's headers sort the whole list on the gateway, across pages:
// name, type, last seen, messages and first seen, a second click reverses the order, the next
// page continues it, and the address keeps it (a reload shows the same order). Each row shows
// the device's latest values with their units. (The headers used to sort the page shown only.)
func TestBrowserSortDevices(t *testing.T) {
	f, ts := browserFixture(t, Config{})
	now := time.Now()
	// 60 devices, newest dev-59; dev-00 has the most messages; types cycle over three.
	for i := range 60 {
		name := fmt.Sprintf("dev-%02d", i)
		for k := range 60 - i {
			f.store.report(name, []string{"zeta", "alpha", "mid"}[i%3], now.Add(-time.Duration(60-i)*time.Minute-time.Duration(k)*time.Second),
				map[string]any{"temp": 20 + float64(i)/2, "hum": 40 + i%7, "mode": "eco"})
		}
	}
	f.store.mu.Lock()
	f.store.things["dev-59"].units = map[string]string{"temp": "Cel", "hum": "%RH"}
	f.store.mu.Unlock()
	ctx, cancel := httpapitest.Browser(t)
	defer cancel()
	console := httpapitest.WatchConsole(t, ctx)
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/")); err != nil {
		t.Fatal(err)
	}
	first := `document.querySelector('#things tbody tr[data-name]')?.dataset.name`
	poll(t, ctx, "the list, newest first", first+` === 'dev-59' && document.querySelectorAll('#things tbody tr[data-name]').length === 50`)
	latest := eval[string](t, ctx, `[...document.querySelectorAll('#things tbody tr[data-name="dev-59"] .val')].map(v => v.innerText).join(' | ')`)
	if latest != "hum 43 %RH | mode eco | temp 49.5 Cel" {
		t.Errorf("dev-59's latest values %q", latest)
	}
	httpapitest.Screenshot(t, ctx, "devices-latest.png")

	for _, c := range []struct{ col, first, aria, hash string }{
		{"name", "dev-00", "ascending", "#/?sort=name&order=asc"}, // on the second page in the default order
		{"name", "dev-59", "descending", "#/?sort=name&order=desc"},
		{"type", "dev-01", "ascending", "#/?sort=type&order=asc"}, // alpha: dev-01, dev-04, ...
		{"messages", "dev-00", "descending", "#/?sort=messages&order=desc"},
		{"messages", "dev-59", "ascending", "#/?sort=messages&order=asc"},
		{"firstSeen", "dev-59", "descending", "#/?sort=firstSeen&order=desc"},
		{"lastSeen", "dev-59", "descending", "#/"}, // the default order
		{"lastSeen", "dev-00", "ascending", "#/?sort=lastSeen&order=asc"},
	} {
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#things th[data-sort="`+c.col+`"] button`))); err != nil {
			t.Fatal(err)
		}
		poll(t, ctx, "sorted by "+c.col+" "+c.aria, first+` === '`+c.first+`' && document.querySelector('#things th[data-sort="`+c.col+`"]').getAttribute('aria-sort') === '`+c.aria+`'`)
		if h := eval[string](t, ctx, `location.hash`); h != c.hash {
			t.Errorf("sorted by %s %s: address %q, want %q", c.col, c.aria, h, c.hash)
		}
	}
	// The order goes on across pages, and survives a reload.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#things th[data-sort="name"] button`))); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "by name", first+` === 'dev-00'`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#pg-next"))); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the second page by name", first+` === 'dev-50' && document.querySelector('#pg-range').textContent === '51–60 of 60'`)
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "by name after a reload", first+` === 'dev-00' && document.querySelector('#things th[data-sort="name"]').getAttribute('aria-sort') === 'ascending'`)
	if q := f.store.lastQuery(); q.Sort != "name" || q.Order != "asc" || q.Latest != 3 {
		t.Errorf("the dashboard asked for %+v, want sort name, order asc, latest 3", q)
	}
	console.Check(t)
}
