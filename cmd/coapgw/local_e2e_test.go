package main

// End-to-end tests of local mode: the real binary with --process local, libcoap's client, the
// registry on disk, the HTTP API and the dashboard in headless chromium.

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
	"github.com/coapgw/coapgw/internal/httpapitest"
)

// getJSON fetches an API path into v and returns the status code.
func getJSON(t *testing.T, g *gw, path string, v any) int {
	t.Helper()
	resp, err := http.Get("http://" + g.http + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == 200 && v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			if len(body) > 300 {
				body = append(body[:300], "..."...)
			}
			t.Fatalf("%s: %v in %s", path, err, body)
		}
	}
	return resp.StatusCode
}

// waitFor polls cond every 20 ms for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type apiThing struct {
	Name     string `json:"thingName"`
	Type     string `json:"thingTypeName"`
	Messages int64  `json:"messages"`
	Version  int64  `json:"version"`
}

type apiShadow struct {
	State struct {
		Reported map[string]any `json:"reported"`
	} `json:"state"`
	Metadata struct {
		Reported map[string]struct {
			Timestamp int64 `json:"timestamp"`
		} `json:"reported"`
	} `json:"metadata"`
	Version   int64 `json:"version"`
	Timestamp int64 `json:"timestamp"`
}

type apiSeries struct {
	Property string `json:"property"`
	Points   []struct {
		T time.Time `json:"t"`
		V float64   `json:"v"`
	} `json:"points"`
}

func TestLocalModeLibcoapToAPI(t *testing.T) {
	bin, err := exec.LookPath("coap-client-notls")
	if err != nil {
		if httpapitest.RequirePeers() {
			t.Fatal("coap-client-notls not installed (Debian libcoap3-bin)")
		}
		t.Skip("coap-client-notls not installed")
	}
	dir := t.TempDir()
	g := startGW(t, dir, "--process", "local")
	postOut := func(path, payload string) string {
		out, err := exec.Command(bin, "-m", "post", "-t", "50", "-e", payload, fmt.Sprintf("coap://%s%s", g.coap, path)).CombinedOutput()
		if err != nil {
			t.Fatalf("coap-client post %s: %v %q", path, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	post := func(path, payload string) {
		if out := postOut(path, payload); out != "" {
			t.Fatalf("coap-client post %s: %q", path, out)
		}
	}
	post("/sensor/dev-1", `{"temp":21.5,"hum":40,"env":{"lux":300}}`)
	post("/sensor/dev-1", `{"temp":22,"env":{"lux":null}}`)
	post("/meter/m-7", `{"kwh":1.5}`)
	var th apiThing
	waitFor(t, "dev-1 with 2 messages in the API", func() bool {
		return getJSON(t, g, "/api/things/dev-1", &th) == 200 && th.Messages == 2
	})
	if th.Type != "sensor" || th.Version != 2 {
		t.Fatalf("thing %+v", th)
	}
	var types struct {
		List []struct {
			Name   string `json:"thingTypeName"`
			Things int64  `json:"things"`
		} `json:"thingTypes"`
	}
	waitFor(t, "two thing types", func() bool { getJSON(t, g, "/api/thing-types", &types); return len(types.List) == 2 })
	var sh apiShadow
	if code := getJSON(t, g, "/api/things/dev-1/shadow", &sh); code != 200 {
		t.Fatalf("shadow: %d", code)
	}
	rep := sh.State.Reported
	if rep["temp"] != 22.0 || rep["hum"] != 40.0 || sh.Version != 2 {
		t.Fatalf("shadow state %v version %d", rep, sh.Version)
	}
	if env, ok := rep["env"].(map[string]any); ok && len(env) != 0 {
		t.Fatalf("null did not delete env.lux: %v", rep["env"])
	}
	if sh.Metadata.Reported["temp"].Timestamp == 0 {
		t.Fatalf("no metadata timestamp for temp: %+v", sh.Metadata)
	}
	var h struct {
		Series []apiSeries `json:"series"`
	}
	getJSON(t, g, "/api/things/dev-1/history?property=temp", &h)
	hist := h.Series
	if len(hist) != 1 || len(hist[0].Points) != 2 || hist[0].Points[0].V != 21.5 || hist[0].Points[1].V != 22 {
		t.Fatalf("history %+v", hist)
	}
	var page struct {
		Things []apiThing `json:"things"`
		Total  int64      `json:"total"`
	}
	getJSON(t, g, "/api/things?type=meter", &page)
	if page.Total != 1 || len(page.Things) != 1 || page.Things[0].Name != "m-7" {
		t.Fatalf("things of type meter: %+v", page)
	}
	if code := getJSON(t, g, "/api/things/nope", nil); code != 404 {
		t.Fatalf("unknown thing: %d", code)
	}
	// A thing that exists with another type gets 4.00 and is not stored; the records behind it
	// still apply.
	if out := postOut("/other/dev-1", `{"x":1}`); !strings.HasPrefix(out, "4.00 thing dev-1 exists with type sensor") {
		t.Fatalf("another type: %q, want 4.00 \"thing dev-1 exists with type sensor\"", out)
	}
	post("/sensor/dev-2", `{"temp":5}`)
	waitFor(t, "dev-2", func() bool { return getJSON(t, g, "/api/things/dev-2", &th) == 200 })
	// One stored without the registry's knowledge (--process none: only the spool) is set aside
	// with a reason when local mode applies it, and the records behind it still apply.
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}
	g = startGW(t, dir, "--process", "none")
	post("/other/dev-1", `{"x":1}`)
	post("/sensor/dev-3", `{"temp":5}`)
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}
	g = startGW(t, dir, "--process", "local")
	var errs struct {
		Records []struct {
			Thing  string `json:"thingName"`
			Reason string `json:"reason"`
		} `json:"records"`
	}
	waitFor(t, "the set-aside record", func() bool { getJSON(t, g, "/api/errors", &errs); return len(errs.Records) == 1 })
	if errs.Records[0].Thing != "dev-1" || !strings.Contains(errs.Records[0].Reason, "sensor") {
		t.Fatalf("set aside: %+v", errs.Records)
	}
	waitFor(t, "dev-3", func() bool { return getJSON(t, g, "/api/things/dev-3", &th) == 200 })
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}
}

// TestLocalModeKill9 kills the gateway with SIGKILL under load, restarts it, and repeats; then
// every acknowledged record must be reflected in the registry exactly once, and nothing that was
// never sent. Each record carries a unique n, and the history of n tells which records were applied.
func TestLocalModeKill9(t *testing.T) {
	dir := t.TempDir()
	const devices, rounds = 12, 4
	g, acked, sent := killLoad{devices: devices, perRound: 200, rounds: rounds,
		path:    func(d int) string { return fmt.Sprintf("/load/k9-%d", d) },
		payload: func(n int) string { return fmt.Sprintf(`{"n":%d}`, n) },
	}.run(t, func() *gw { return startGW(t, dir, "--process", "local") })
	// Let the processor drain the spool, then check.
	var st struct {
		SpoolDepth int64   `json:"spoolDepth"`
		Lag        float64 `json:"processorLagSeconds"`
	}
	waitFor(t, "the spool to drain", func() bool { getJSON(t, g, "/api/status", &st); return st.SpoolDepth == 0 })
	totalAcked := 0
	for d := 0; d < devices; d++ {
		name := fmt.Sprintf("k9-%d", d)
		var th apiThing
		var h struct {
			Series []apiSeries `json:"series"`
		}
		if getJSON(t, g, "/api/things/"+name, &th) != 200 {
			if len(acked[d]) > 0 {
				t.Fatalf("%s: %d acknowledged records, thing missing", name, len(acked[d]))
			}
			continue
		}
		getJSON(t, g, "/api/things/"+name+"/history?property=n&limit=1000", &h)
		hist := h.Series
		seen := map[int]int{}
		if len(hist) == 1 {
			for _, p := range hist[0].Points {
				seen[int(p.V)]++
			}
		}
		for n, c := range seen {
			if c > 1 {
				t.Errorf("%s: record n=%d applied %d times", name, n, c)
			}
			if !sent[d][n] {
				t.Errorf("%s: record n=%d applied but never sent", name, n)
			}
		}
		for n := range acked[d] {
			if seen[n] == 0 {
				t.Errorf("%s: acknowledged record n=%d not in the registry", name, n)
			}
		}
		if th.Messages != int64(len(seen)) {
			t.Errorf("%s: message count %d, but %d distinct records applied", name, th.Messages, len(seen))
		}
		totalAcked += len(acked[d])
	}
	if totalAcked == 0 {
		t.Fatal("nothing acknowledged")
	}
	t.Logf("%d rounds, %d records acknowledged, all reflected exactly once", rounds, totalAcked)
	g.stop(syscall.SIGTERM)
}

// killLoad is a load of devices posting numbered records to gateways that are killed with SIGKILL
// and restarted, rounds times: every round but the last ends with the kill at a random moment
// (50–350 ms in); the last runs to the end and its gateway is left running.
type killLoad struct {
	devices, perRound, rounds int
	path                      func(device int) string // the device's URI path
	payload                   func(n int) string      // record n of a device
	pause                     time.Duration           // between a device's posts
}

// run returns the gateway of the last round and, per device, the records (by n) acknowledged
// with 2.04 and those sent at all.
func (k killLoad) run(t *testing.T, start func() *gw) (g *gw, acked, sent []map[int]bool) {
	t.Helper()
	acked, sent = make([]map[int]bool, k.devices), make([]map[int]bool, k.devices)
	for d := range acked {
		acked[d], sent[d] = map[int]bool{}, map[int]bool{}
	}
	next := make([]int, k.devices)
	for round := range k.rounds {
		g = start()
		var wg sync.WaitGroup
		var mu sync.Mutex
		for d := range k.devices {
			wg.Go(func() {
				c, err := coaptest.Dial(g.coap)
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				c.Timeout = 500 * time.Millisecond
				for range k.perRound {
					mu.Lock()
					n := next[d]
					next[d]++
					sent[d][n] = true
					mu.Unlock()
					resp, err := c.Post(k.path(d), k.payload(n))
					if err != nil {
						return // the gateway is gone
					}
					if resp.Code == coapmsg.Changed {
						mu.Lock()
						acked[d][n] = true
						mu.Unlock()
					}
					time.Sleep(k.pause)
				}
			})
		}
		if round < k.rounds-1 {
			time.Sleep(time.Duration(50+rand.IntN(300)) * time.Millisecond)
			g.cmd.Process.Signal(syscall.SIGKILL)
			<-g.done
		}
		wg.Wait()
	}
	return g, acked, sent
}

// TestDashboardEndToEnd: a device posts over CoAP to the real gateway and shows up on the
// dashboard in a real browser without a reload, with its value and a drawn chart.
func TestDashboardEndToEnd(t *testing.T) {
	g := startGW(t, t.TempDir(), "--process", "local")
	ctx, cancel := httpapitest.Browser(t)
	defer cancel()
	console := httpapitest.WatchConsole(t, ctx)
	base := "http://" + g.http
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	poll := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(15*time.Second))); err != nil {
			t.Fatalf("waiting for %s (%s): %v", what, expr, err)
		}
	}
	poll("the live stream", `document.querySelector('#conn').dataset.state === 'live'`)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__noReload = true`)); err != nil {
		t.Fatal(err)
	}
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, v := range []float64{20.5, 21, 21.75, 23.25} {
		resp, err := c.Post("/thermostat/living-room", fmt.Sprintf(`{"temp":%g,"i":%d}`, v, i))
		if err != nil || resp.Code != coapmsg.Changed {
			t.Fatalf("post: %v %+v", err, resp)
		}
		time.Sleep(20 * time.Millisecond)
	}
	poll("the device row", `!!document.querySelector('#things tbody tr[data-name="living-room"]')`)
	if ok, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__noReload === true`)); !ok {
		t.Fatal("the page reloaded to show the device")
	}
	httpapitest.Screenshot(t, ctx, "e2e-dashboard.png")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#things tbody tr[data-name="living-room"] a`))); err != nil {
		t.Fatal(err)
	}
	poll("the value", `(document.querySelector('#state tr[data-prop="temp"] .value') || {}).textContent === '23.25'`)
	poll("a drawn chart", `(() => {
	  const c = document.querySelector('.chart-card[data-prop="temp"] canvas');
	  if (!c || !c.width) return false;
	  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
	  let line = 0;
	  for (let i = 0; i < d.length; i += 4) if (d[i+3] > 200 && d[i+2] > 150 && d[i+2] > d[i] + 60) line++;
	  return line > 50;
	})()`)
	poll("the status panel's counts", `document.querySelector('#st-things').textContent === '1' && document.querySelector('#st-types').textContent === '1 type · 4 messages'`)
	httpapitest.Screenshot(t, ctx, "e2e-device.png")

	// A device that sent only {} has a page, although the registry has no shadow for it (404).
	if resp, err := c.Post("/thermostat/dev-2", `{}`); err != nil || resp.Code != coapmsg.Changed {
		t.Fatalf("post {}: %v %+v", err, resp)
	}
	// A 2.04 means the record will be applied, not that it has been: the page is opened once the
	// registry has the thing (what this checks is the page of a thing with no shadow).
	waitFor(t, "dev-2 in the registry", func() bool { return getJSON(t, g, "/api/things/dev-2", nil) == 200 })
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/#/things/dev-2")); err != nil {
		t.Fatal(err)
	}
	poll("the page of the device that sent {}", `(document.querySelector('#device-name') || {}).textContent === 'dev-2' &&
	  document.querySelector('#state').innerText.includes('Nothing reported yet') && !document.querySelector('#view').innerText.includes('No device named')`)
	for _, e := range console.Errors() {
		if !strings.Contains(e, "404") { // the shadow of dev-2, which the page expects
			t.Errorf("browser: %s", e)
		}
	}
	g.stop(syscall.SIGTERM)
}
