package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coapgw/coapgw/internal/httpapitest"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/registry"
)

const conflict = "thing dev-1 exists with type sensor"

// seedConflict fills a real registry as coapgw bench did before it had names of its own:
// sensor/dev-1 exists, and n records of bench/dev-1 are set aside for its type; plus one record
// of dev-2 with a payload that is not JSON.
func seedConflict(t testing.TB, f *realFixture, n int) {
	t.Helper()
	now := time.Now().Add(-time.Hour)
	f.apply(t, realRec("sensor", "dev-1", now, `{"temp":20}`))
	var recs []record.Record
	for i := range n {
		recs = append(recs, realRec("bench", "dev-1", now.Add(time.Duration(i+1)*time.Second), fmt.Sprintf(`{"i":%d}`, i)))
	}
	for _, o := range f.apply(t, recs...) {
		if o != "set_aside" {
			t.Fatalf("a bench record was %s", o)
		}
	}
	if o := f.apply(t, realRec("sensor", "dev-2", now, `{"v":`)); o[0] != "set_aside" {
		t.Fatalf("the bad record was %s", o[0])
	}
}

// TestRetryAPI: POST /api/errors/retry over a real registry. It needs the token; a reason's
// records fail again while their cause lasts (set aside again), and are applied once the
// conflicting thing is deleted; one record is retried by gw and seq; bad parameters get 400 and
// no match 404; OnRetried hears of the things applied.
func TestRetryAPI(t *testing.T) {
	var learnt []registry.NamedThing
	f := newRealFixture(t, Config{Token: testToken, OnRetried: func(th []registry.NamedThing) { learnt = append(learnt, th...) }})
	seedConflict(t, f, 30)
	auth := []string{"Authorization", "Bearer " + testToken}
	post := func(target string, hdr ...string) response {
		t.Helper()
		return call(t, f.mux, "POST", target, "localhost", hdr...)
	}
	wantUnauthorized(t, "retry without the token", post("/api/errors/retry?reason="+url.QueryEscape(conflict)))
	var res registry.RetryResult
	r := post("/api/errors/retry?reason="+url.QueryEscape(conflict), auth...)
	r.decode(t, &res)
	if r.code != 200 || res.Applied != 0 || res.SetAside != 30 {
		t.Fatalf("retry while dev-1 is a sensor: %d %s", r.code, r.body)
	}
	if r := call(t, f.mux, "DELETE", "/api/things/dev-1", "localhost", auth...); r.code != http.StatusNoContent {
		t.Fatalf("delete dev-1: %d %s", r.code, r.body)
	}
	r = post("/api/errors/retry?reason="+url.QueryEscape(conflict), auth...)
	res = registry.RetryResult{}
	r.decode(t, &res)
	if r.code != 200 || res.Applied != 30 || res.SetAside != 0 || string(r.body) != `{"applied":30,"setAside":0,"skipped":0}`+"\n" {
		t.Fatalf("retry after the delete: %d %s", r.code, r.body)
	}
	var th registry.Thing
	call(t, f.mux, "GET", "/api/things/dev-1", "localhost").decode(t, &th)
	if th.Type != "bench" || th.Messages != 30 {
		t.Errorf("dev-1 after the retry: %+v", th)
	}
	if len(learnt) != 1 || learnt[0] != (registry.NamedThing{Name: "dev-1", Type: "bench"}) {
		t.Errorf("OnRetried heard %+v", learnt)
	}
	if r := post("/api/errors/retry?reason="+url.QueryEscape(conflict), auth...); r.code != 404 {
		t.Errorf("retry of records no longer set aside: %d %s", r.code, r.body)
	}
	var page registry.SetAsidePage
	call(t, f.mux, "GET", "/api/errors", "localhost").decode(t, &page)
	if len(page.Records) != 1 {
		t.Fatalf("set-aside records %+v", page.Records)
	}
	bad := page.Records[0]
	r = post(fmt.Sprintf("/api/errors/retry?gw=%s&seq=%d", bad.GW, bad.Seq), auth...)
	res = registry.RetryResult{}
	r.decode(t, &res)
	if r.code != 200 || res.SetAside != 1 {
		t.Errorf("retry of the bad record: %d %s", r.code, r.body)
	}
	for _, c := range []struct{ target, want string }{
		{"/api/errors/retry", "reason is required"},
		{"/api/errors/retry?reason=x&seq=1", "not both"},
		{"/api/errors/retry?gw=gw-test&seq=x", "seq must be"},
		{"/api/errors/retry?thing=dev-1", `unknown parameter "thing"`},
	} {
		if r := post(c.target, auth...); r.code != 400 || !strings.Contains(r.errorMessage(t), c.want) {
			t.Errorf("%s: %d %s, want 400 %q", c.target, r.code, r.body, c.want)
		}
	}
	if r := call(t, f.mux, "GET", "/api/errors/retry", "localhost"); r.code != 405 || r.header.Get("Allow") != "POST" {
		t.Errorf("GET retry: %d %v", r.code, r.header)
	}
	if !strings.Contains(f.logs.String(), "set-aside records retried") {
		t.Errorf("the retry is not logged:\n%s", f.logs)
	}
}

// TestBrowserRetrySetAside: on the set-aside page over a real registry, the records of a reason
// are retried with its Retry button: while the conflicting thing exists they are set aside again
// (the page says so), after it is deleted they are applied and leave the list; one record is
// retried from its own row.
func TestBrowserRetrySetAside(t *testing.T) {
	f := newRealFixture(t, Config{Token: testToken})
	seedConflict(t, f, 40)
	ts := httptest.NewServer(f.mux)
	t.Cleanup(ts.Close)
	ctx, cancel := httpapitest.Browser(t)
	defer cancel()
	console := httpapitest.WatchConsole(t, ctx)
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/#/errors")); err != nil {
		t.Fatal(err)
	}
	groups := `[...document.querySelectorAll('#reasons tr[data-reason]')].map(r => r.dataset.reason + '=' + r.querySelector('.count').textContent).join('; ')`
	poll(t, ctx, "the groups", groups+` === '`+conflict+`=40; `+badReason(t, f)+`=1'`)
	httpapitest.Screenshot(t, ctx, "errors-retry.png")
	login := fmt.Sprintf(`fetch('api/login', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({token: %q})}).then(r => r.status)`, testToken)
	if st, err := chromedp.Run(ctx, chromedp.Evaluate[float64](login, chromedp.EvalAwaitPromise)); err != nil || st != 204 {
		t.Fatalf("login: %v %v", st, err)
	}
	// Clicked in the page, in one step: the list is re-rendered when things change (the event
	// stream), and a node looked up by the driver first may be gone by the time it is clicked.
	retryGroup := func() {
		t.Helper()
		clickWhenThere(t, ctx, `#reasons tr[data-reason="`+conflict+`"] .retry`)
	}
	retryGroup()
	poll(t, ctx, "the failed retry", `document.querySelector('#reasons-msg').textContent === 'Retried 40 records: 0 applied, 40 set aside again.'`)
	del := `fetch('api/things/dev-1', {method: 'DELETE'}).then(r => r.status)`
	if st, err := chromedp.Run(ctx, chromedp.Evaluate[float64](del, chromedp.EvalAwaitPromise)); err != nil || st != 204 {
		t.Fatalf("delete dev-1: %v %v", st, err)
	}
	retryGroup()
	poll(t, ctx, "the retry", `document.querySelector('#reasons-msg').textContent === 'Retried 40 records: 40 applied, 0 set aside again.' && document.querySelectorAll('#reasons tr[data-reason]').length === 1 && document.querySelectorAll('#errors tbody tr[data-seq]').length === 1`)
	th, err := f.reg.Thing(t.Context(), "dev-1")
	if err != nil || th.Type != "bench" || th.Messages != 40 {
		t.Errorf("dev-1 after the retry: %+v, %v", th, err)
	}
	clickWhenThere(t, ctx, `#errors tbody tr[data-seq] .retry-one`)
	poll(t, ctx, "the retry of one record", `document.querySelector('#reasons-msg').textContent === 'Retried 1 record: 0 applied, 1 set aside again.'`)
	if c, _ := f.reg.Counts(t.Context()); c.SetAside != 1 || c.Messages != 40 {
		t.Errorf("counts after the retries: %+v", c)
	}
	console.Check(t)
}

// clickWhenThere waits for the element sel selects and clicks it, in the page: looking it up and
// clicking it are one step, so a re-render in between cannot leave a stale node.
func clickWhenThere(t testing.TB, ctx context.Context, sel string) {
	t.Helper()
	poll(t, ctx, "a click on "+sel, fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) return false; e.click(); return true; })()`, sel))
}

// badReason is the reason the registry gave the bad record of seedConflict.
func badReason(t testing.TB, f *realFixture) string {
	t.Helper()
	page, err := f.reg.SetAsides(t.Context(), 1, "")
	if err != nil || len(page.Records) != 1 {
		t.Fatal(page, err)
	}
	return page.Records[0].Reason
}
