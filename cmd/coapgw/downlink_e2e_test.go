package main

// End-to-end tests of the downlink in local mode: desired state set over the HTTP API rides in
// the 2.04 of the device's next report (libcoap's coap-client with Accept: 50) until the device
// reports the desired values.

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
	"github.com/coapgw/coapgw/internal/httpapitest"
)

// httpPut sends PUT url with body and an optional bearer token; it returns the status and body.
func httpPut(t *testing.T, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func coapClient(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("coap-client-notls")
	if err != nil {
		if httpapitest.RequirePeers() {
			t.Fatal("coap-client-notls not installed (Debian libcoap3-bin)")
		}
		t.Skip("coap-client-notls not installed")
	}
	return bin
}

// startDownlinkGW starts a local-mode gateway with an API token; it returns the token.
func startDownlinkGW(t *testing.T) (*gw, string) {
	t.Helper()
	return startDownlinkGWIn(t, t.TempDir())
}

// startDownlinkGWIn is startDownlinkGW on the data directory dir.
func startDownlinkGWIn(t *testing.T, dir string) (*gw, string) {
	t.Helper()
	const token = "downlink-test-token-0123456789abcdef"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return startGW(t, dir, "--process", "local", "--http-token-file", tokenFile), token
}

// TestDownlinkDeltaInTheAnswer: set desired state by the API → the next POST's 2.04 carries the
// delta (to a device that sends Accept: 50; one without Accept gets the bare 2.04 as before) →
// the device reports the desired value → the delta is gone from the answers, the shadow and
// GET /{type}/{id}.
func TestDownlinkDeltaInTheAnswer(t *testing.T) {
	bin := coapClient(t)
	g, token := startDownlinkGW(t)
	coap := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("coap-client %v: %v %q", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	uri := "coap://" + g.coap.String() + "/sensor/dev-1"
	post := func(payload string, accept bool) string {
		args := []string{"-m", "post", "-t", "50", "-e", payload}
		if accept {
			args = append(args, "-A", "50")
		}
		return coap(append(args, uri)...)
	}
	if out := post(`{"interval":30,"temp":20}`, true); out != "" {
		t.Fatalf("answer before any desired state: %q", out)
	}
	var th apiThing
	waitFor(t, "dev-1 in the registry", func() bool { return getJSON(t, g, "/api/things/dev-1", &th) == 200 })

	shadowURL := "http://" + g.http + "/api/things/dev-1/shadow"
	desired := `{"state":{"desired":{"interval":60}}}`
	if code, body := httpPut(t, shadowURL, "", desired); code != http.StatusUnauthorized {
		t.Fatalf("PUT without the token: %d %s", code, body)
	}
	if code, body := httpPut(t, shadowURL, token, `{"state":{"reported":{"interval":60}}}`); code != http.StatusBadRequest {
		t.Fatalf("PUT of reported state: %d %s", code, body)
	}
	if code, body := httpPut(t, "http://"+g.http+"/api/things/nope/shadow", token, desired); code != http.StatusNotFound {
		t.Fatalf("PUT for an unknown thing: %d %s", code, body)
	}
	code, body := httpPut(t, shadowURL, token, desired)
	if code != http.StatusOK || !strings.Contains(body, `"delta":{"interval":60}`) {
		t.Fatalf("PUT desired: %d %s", code, body)
	}

	if out := post(`{"temp":21}`, false); out != "" {
		t.Fatalf("a device without Accept got %q", out)
	}
	// The version is the shadow's: 2 after the desired change, more once the reports before
	// are applied.
	pending := regexp.MustCompile(`^\{"state":\{"interval":60\},"version":[234]\}$`)
	if out := post(`{"temp":22}`, true); !pending.MatchString(out) {
		t.Fatalf("answer with a pending change: %q, want %s", out, pending)
	}
	if out := coap("-m", "get", uri); !pending.MatchString(out) {
		t.Fatalf("GET: %q, want %s", out, pending)
	}

	// The device applies it and reports it: the delta is gone.
	post(`{"interval":60}`, true)
	waitFor(t, "the delta to leave the shadow", func() bool {
		var sh map[string]any
		getJSON(t, g, "/api/things/dev-1/shadow", &sh)
		st, _ := sh["state"].(map[string]any)
		_, has := st["delta"]
		return st != nil && st["desired"] != nil && !has
	})
	if out := post(`{"temp":23}`, true); out != "" {
		t.Fatalf("answer after the device reported the desired value: %q", out)
	}
	if out := coap("-m", "get", uri); out != `{"state":{}}` {
		t.Fatalf("GET after the report: %q", out)
	}
}

// TestDownlinkObserve: libcoap's coap-client observing GET /sensor/dev-1 gets a notification
// with the delta within a second of a desired change made over the HTTP API.
func TestDownlinkObserve(t *testing.T) {
	bin := coapClient(t)
	g, token := startDownlinkGW(t)
	uri := "coap://" + g.coap.String() + "/sensor/dev-1"
	if out, err := exec.Command(bin, "-m", "post", "-t", "50", "-e", `{"interval":30}`, uri).CombinedOutput(); err != nil {
		t.Fatalf("post: %v %q", err, out)
	}
	var th apiThing
	waitFor(t, "dev-1 in the registry", func() bool { return getJSON(t, g, "/api/things/dev-1", &th) == 200 })

	obs := exec.Command(bin, "-s", "4", "-m", "get", uri)
	var out syncBuffer
	obs.Stdout, obs.Stderr = &out, &out
	if err := obs.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- obs.Wait() }()
	t.Cleanup(func() {
		if obs.ProcessState == nil {
			obs.Process.Kill()
			<-done
		}
	})
	notifications := func() float64 {
		m := scrape(t, g)
		return metricValue(t, m, `coapgw_coap_notifications_total{type="non"}`) + metricValue(t, m, `coapgw_coap_notifications_total{type="con"}`)
	}
	waitFor(t, "the observer to register", func() bool { return metricValue(t, scrape(t, g), "coapgw_coap_observers") == 1 })
	before := notifications()
	if code, body := httpPut(t, "http://"+g.http+"/api/things/dev-1/shadow", token, `{"state":{"desired":{"interval":60}}}`); code != 200 {
		t.Fatalf("PUT desired: %d %s", code, body)
	}
	changed := time.Now()
	waitFor(t, "a notification", func() bool { return notifications() > before })
	if d := time.Since(changed); d > time.Second {
		t.Fatalf("notification sent %v after the change", d)
	}
	if err := <-done; err != nil {
		t.Fatalf("coap-client: %v %q", err, out.String())
	}
	if got := out.String(); !strings.Contains(got, `{"state":{}}`) || !strings.Contains(got, `{"state":{"interval":60},"version":2}`) {
		t.Fatalf("coap-client printed %q, want the state at registration and the notification", got)
	}
}

// TestDashboardDesiredState: on the device page in headless chromium, setting desired state
// shows the delta until the device reports the desired value (the real binary, a real CoAP
// client, the registry on disk).
func TestDashboardDesiredState(t *testing.T) {
	g, token := startDownlinkGW(t)
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	post := func(payload string) {
		t.Helper()
		if resp, err := c.Post("/sensor/dev-1", payload); err != nil || resp.Code != coapmsg.Changed {
			t.Fatalf("post: %v %+v", err, resp)
		}
	}
	post(`{"interval":30,"temp":20}`)
	var th apiThing
	waitFor(t, "dev-1 in the registry", func() bool { return getJSON(t, g, "/api/things/dev-1", &th) == 200 })

	ctx, cancel := httpapitest.Browser(t)
	defer cancel()
	console := httpapitest.WatchConsole(t, ctx)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+g.http+"/#/things/dev-1")); err != nil {
		t.Fatal(err)
	}
	poll := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(15*time.Second))); err != nil {
			t.Fatalf("waiting for %s (%s): %v", what, expr, err)
		}
	}
	poll("the desired state panel", `(document.querySelector('#delta-status') || {}).textContent === 'none set'`)
	// Writes need the token, on loopback too: log in as the dashboard's form does.
	login := fmt.Sprintf(`fetch('api/login', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({token: %q})}).then(r => r.status)`, token)
	if st, err := chromedp.Run(ctx, chromedp.Evaluate[float64](login, chromedp.EvalAwaitPromise)); err != nil || st != 204 {
		t.Fatalf("login: %v %v", st, err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => {
	  const ta = document.querySelector('#desired-edit');
	  ta.value = '{"interval": 60, "mode": "eco"}';
	  ta.dispatchEvent(new Event('input'));
	  return true;
	})()`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#desired-save"))); err != nil {
		t.Fatal(err)
	}
	poll("the delta", `document.querySelector('#delta-status').textContent === '2 pending' &&
	  document.querySelector('#delta tr[data-prop="interval"] .value').textContent === '60' &&
	  !!document.querySelector('#delta tr[data-prop="mode"]')`)
	httpapitest.Screenshot(t, ctx, "e2e-desired.png")

	// The device reports one value, then the other: the delta shrinks, then the page says in sync.
	post(`{"interval":60}`)
	poll("the delta without interval", `document.querySelector('#delta-status').textContent === '1 pending' &&
	  !document.querySelector('#delta tr[data-prop="interval"]')`)
	post(`{"mode":"eco"}`)
	poll("in sync", `document.querySelector('#delta-status').textContent === 'in sync' && document.querySelectorAll('#delta tr').length === 0`)
	console.Check(t)
}

// TestDownlinkObserverRST: an observer (our own client over real UDP) that answers a
// notification with RST is removed: the gateway counts it and sends it nothing more.
func TestDownlinkObserverRST(t *testing.T) {
	g, token := startDownlinkGW(t)
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if resp, err := c.Post("/sensor/dev-1", `{"interval":30}`); err != nil || resp.Code != coapmsg.Changed {
		t.Fatalf("post: %v %+v", err, resp)
	}
	var th apiThing
	waitFor(t, "dev-1 in the registry", func() bool { return getJSON(t, g, "/api/things/dev-1", &th) == 200 })
	reg := c.Request(coapmsg.Confirmable, coapmsg.GET, "/sensor/dev-1", nil, coapmsg.Option{Number: coapmsg.Observe})
	resp, err := c.Do(reg)
	if _, ok := resp.Option(coapmsg.Observe); err != nil || resp.Code != coapmsg.Content || !ok {
		t.Fatalf("registration: %v %+v", err, resp)
	}
	shadow := "http://" + g.http + "/api/things/dev-1/shadow"
	if code, body := httpPut(t, shadow, token, `{"state":{"desired":{"interval":60}}}`); code != 200 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	n, err := c.Read(5 * time.Second)
	if err != nil || string(n.Token) != string(reg.Token) || !strings.Contains(string(n.Payload), `"interval":60`) {
		t.Fatalf("notification: %v %+v", err, n)
	}
	if err := c.Send([]byte{0x70, 0, byte(n.MID >> 8), byte(n.MID)}); err != nil { // RST
		t.Fatal(err)
	}
	waitFor(t, "the observer to be removed", func() bool {
		m := scrape(t, g)
		return metricValue(t, m, "coapgw_coap_observers") == 0 &&
			metricValue(t, m, `coapgw_coap_observers_removed_total{reason="rst"}`) == 1
	})
	if code, body := httpPut(t, shadow, token, `{"state":{"desired":{"interval":90}}}`); code != 200 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	if m, err := c.Read(500 * time.Millisecond); err == nil {
		t.Fatalf("a removed observer got %+v", m)
	}
}

// TestDownlinkAcrossRestart: desired state survives a restart of the gateway, and the first
// report after it gets the pending delta.
func TestDownlinkAcrossRestart(t *testing.T) {
	bin := coapClient(t)
	dir := t.TempDir()
	g, token := startDownlinkGWIn(t, dir)
	post := func(g *gw) string {
		t.Helper()
		out, err := exec.Command(bin, "-m", "post", "-t", "50", "-A", "50", "-e", `{"temp":1}`, "coap://"+g.coap.String()+"/sensor/dev-1").CombinedOutput()
		if err != nil {
			t.Fatalf("coap-client: %v %q", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if out := post(g); out != "" {
		t.Fatalf("first answer %q", out)
	}
	var th apiThing
	waitFor(t, "dev-1 in the registry", func() bool { return getJSON(t, g, "/api/things/dev-1", &th) == 200 })
	if code, body := httpPut(t, "http://"+g.http+"/api/things/dev-1/shadow", token, `{"state":{"desired":{"fw":"beta"}}}`); code != 200 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("stop: %v", err)
	}
	g2, _ := startDownlinkGWIn(t, dir)
	if out := post(g2); !strings.HasPrefix(out, `{"state":{"fw":"beta"},"version":`) {
		t.Fatalf("answer after the restart: %q", out)
	}
}
