package main

// End-to-end tests of the payload formats (CBOR, SenML JSON, SenML CBOR) through the real binary
// in local mode: aiocoap with cbor2, and libcoap's client.

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/httpapitest"
)

type apiUnitSeries struct {
	Property string `json:"property"`
	Unit     string `json:"unit"`
	Points   []struct {
		T time.Time `json:"t"`
		V float64   `json:"v"`
	} `json:"points"`
}

// history returns a thing's series by property once it has n points in all.
func historyOf(t *testing.T, g *gw, thing string, n int) map[string]apiUnitSeries {
	t.Helper()
	var body struct {
		Series []apiUnitSeries `json:"series"`
	}
	waitFor(t, fmt.Sprintf("%d history points of %s", n, thing), func() bool {
		if getJSON(t, g, "/api/things/"+thing+"/history", &body) != 200 {
			return false
		}
		total := 0
		for _, s := range body.Series {
			total += len(s.Points)
		}
		return total == n
	})
	m := map[string]apiUnitSeries{}
	for _, s := range body.Series {
		m[s.Property] = s
	}
	return m
}

// TestFormatsEndToEnd: aiocoap posts the same object as JSON and as CBOR (cbor2), and an hour of
// samples as SenML CBOR; libcoap's client posts SenML JSON (-t 110; its -e
// would take a "%" in the payload for percent-encoding, hence no "%RH"). The CBOR thing's shadow is
// the JSON thing's; the SenML things' history has one point per reading at the device's times,
// with the unit; refused CBOR gets 4.00 naming what is wrong; GET /health with Accept 60 gets CBOR.
func TestFormatsEndToEnd(t *testing.T) {
	if err := exec.Command("python3", "-c", "import aiocoap, cbor2").Run(); err != nil {
		if httpapitest.RequirePeers() {
			t.Fatal("aiocoap or cbor2 not installed (pip install aiocoap cbor2)")
		}
		t.Skip("aiocoap or cbor2 not installed; scripts/test.sh installs them")
	}
	bin, err := exec.LookPath("coap-client-notls")
	if err != nil {
		if httpapitest.RequirePeers() {
			t.Fatal("coap-client-notls not installed (Debian libcoap3-bin)")
		}
		t.Skip("coap-client-notls not installed")
	}
	g := startGW(t, t.TempDir(), "--process", "local")
	bt := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	out, err := exec.Command("python3", "testdata/aiocoap_formats.py", g.coap.String(), strconv.FormatInt(bt.Unix(), 10)).Output()
	if err != nil {
		t.Fatalf("aiocoap client: %v\n%s", err, out)
	}
	got := map[string][2]string{}
	for line := range strings.Lines(string(out)) {
		var a struct{ Name, Code, Payload string }
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("client output %q: %v", line, err)
		}
		got[a.Name] = [2]string{a.Code, a.Payload}
	}
	for name, want := range map[string][2]string{
		"json":         {"2.04", ""},
		"cbor":         {"2.04", ""},
		"senml-cbor":   {"2.04", ""},
		"cbor-bytes":   {"4.00", "byte strings"},
		"cbor-tag":     {"4.00", "tags are not supported"},
		"senml-future": {"4.00", "in the future"},
		"health-cbor":  {"2.05", "cf=60 status=ok"},
	} {
		if a := got[name]; a[0] != want[0] || !strings.Contains(a[1], want[1]) {
			t.Errorf("%s: %s %q, want %s containing %q", name, a[0], a[1], want[0], want[1])
		}
	}

	sj := fmt.Sprintf(`[{"bn":"sj/","bt":%d,"bu":"lx","n":"lux","v":40},{"n":"lux","t":600,"v":41},{"n":"bat","u":"V","t":600,"v":3.6}]`, bt.Unix())
	if out, err := exec.Command(bin, "-m", "post", "-t", "110", "-e", sj, fmt.Sprintf("coap://%s/sensor/sj-1", g.coap)).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Fatalf("coap-client SenML JSON: %v %q", err, out)
	}

	var js, cb struct {
		State struct {
			Reported map[string]any `json:"reported"`
		} `json:"state"`
	}
	waitFor(t, "the JSON and CBOR things' shadows", func() bool {
		return getJSON(t, g, "/api/things/js-1/shadow", &js) == 200 && getJSON(t, g, "/api/things/cb-1/shadow", &cb) == 200
	})
	if !reflect.DeepEqual(js.State.Reported, cb.State.Reported) || js.State.Reported["temp"] != 21.5 {
		t.Errorf("CBOR shadow %v, JSON shadow %v: want the same", cb.State.Reported, js.State.Reported)
	}
	hj, hc := historyOf(t, g, "js-1", 3), historyOf(t, g, "cb-1", 3)
	if len(hj) != 3 || len(hc) != 3 || hj["env.lux"].Points[0].V != hc["env.lux"].Points[0].V {
		t.Errorf("history of the JSON thing %v, of the CBOR thing %v", hj, hc)
	}

	sm := historyOf(t, g, "sm-1", 3)["sm/temp"]
	if sm.Unit != "Cel" || len(sm.Points) != 3 {
		t.Fatalf("SenML CBOR history: %+v", sm)
	}
	for i, want := range []float64{20, 21, 22.5} {
		if p := sm.Points[i]; !p.T.Equal(bt.Add(time.Duration(i)*30*time.Minute)) || p.V != want {
			t.Errorf("sm/temp point %d: %v %v, want %v %v", i, p.T, p.V, bt.Add(time.Duration(i)*30*time.Minute), want)
		}
	}
	var smShadow apiShadow
	if getJSON(t, g, "/api/things/sm-1/shadow", &smShadow); smShadow.State.Reported["sm/temp"] != 22.5 {
		t.Errorf("sm-1 reported %v, want the latest sm/temp, 22.5", smShadow.State.Reported)
	}
	if ts := smShadow.Metadata.Reported["sm/temp"].Timestamp; ts != bt.Add(time.Hour).Unix() {
		t.Errorf("sm/temp's metadata timestamp %d, want the device's %d", ts, bt.Add(time.Hour).Unix())
	}

	h := historyOf(t, g, "sj-1", 3)
	if lux, bat := h["sj/lux"], h["sj/bat"]; lux.Unit != "lx" || len(lux.Points) != 2 || !lux.Points[1].T.Equal(bt.Add(10*time.Minute)) ||
		bat.Unit != "V" || len(bat.Points) != 1 || bat.Points[0].V != 3.6 {
		t.Errorf("SenML JSON history: %+v", h)
	}
}
