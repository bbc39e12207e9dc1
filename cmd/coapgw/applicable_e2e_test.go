package main

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
)

// apiStatus is what these tests read of /api/status.
type apiStatus struct {
	SpoolDepth int64 `json:"spoolDepth"`
	Messages   int64 `json:"messages"`
	SetAside   int64 `json:"setAside"`
}

// settled waits until the processor has applied everything in the spool and returns the counts.
func settled(t *testing.T, g *gw) apiStatus {
	t.Helper()
	var st apiStatus
	waitFor(t, "the spool to drain", func() bool { getJSON(t, g, "/api/status", &st); return st.SpoolDepth == 0 })
	return st
}

// TestApplicableLibcoap (issue 11, finding 5), with libcoap's coap-client against the real
// binary in local mode: /meter/dev-1 after /sensor/dev-1 gets 4.00 "thing dev-1 exists with type
// sensor", also after a restart (the type then comes from the registry); values AWS IoT leaves
// undefined get 4.00 with a diagnostic. Nothing of them is stored: the registry applies the two
// good records and sets nothing aside. Before, each got 2.04 and was set aside (or stored
// verbatim).
func TestApplicableLibcoap(t *testing.T) {
	bin := lookPeer(t, "coap-client-notls")
	dir := t.TempDir()
	g := startGW(t, dir, "--process", "local")
	post := func(g *gw, path, payload string) string {
		t.Helper()
		out, err := exec.Command(bin, "-m", "post", "-t", "50", "-e", payload, fmt.Sprintf("coap://%s%s", g.coap, path)).CombinedOutput()
		if err != nil {
			t.Fatalf("coap-client post %s: %v %q", path, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	refused := func(g *gw, path, payload, diag string) {
		t.Helper()
		if out := post(g, path, payload); !strings.Contains(out, "4.00") || !strings.Contains(out, diag) {
			t.Fatalf("%s %s: %q, want 4.00 %q", path, payload, out, diag)
		}
	}
	if out := post(g, "/sensor/dev-1", `{"t":1}`); out != "" {
		t.Fatalf("first post: %q, want 2.04 (no output)", out)
	}
	refused(g, "/meter/dev-1", `{"t":2}`, "thing dev-1 exists with type sensor")
	for _, c := range []struct{ payload, diag string }{
		{`{"t":1e400}`, "number out of range"},
		{`{"t":1,"t":2}`, `duplicate key "t"`},
		{`{"":1}`, "empty key"},
		{`{"t":"a\u0000b"}`, `NUL (\u0000) in string`},
	} {
		refused(g, "/sensor/dev-1", c.payload, c.diag)
	}
	if st := settled(t, g); st.Messages != 1 || st.SetAside != 0 {
		t.Fatalf("registry: %d applied, %d set aside; want 1 and 0", st.Messages, st.SetAside)
	}
	m := scrape(t, g)
	if v := metricValue(t, m, `coapgw_ingest_records_total{result="type_conflict"}`); v != 1 {
		t.Errorf("type_conflict = %v, want 1", v)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}

	g = startGW(t, dir, "--process", "local")
	refused(g, "/meter/dev-1", `{"t":3}`, "thing dev-1 exists with type sensor")
	if out := post(g, "/sensor/dev-1", `{"t":4}`); out != "" {
		t.Fatalf("post under its own type after the restart: %q, want 2.04", out)
	}
	var th apiThing
	waitFor(t, "dev-1 with 2 messages", func() bool {
		return getJSON(t, g, "/api/things/dev-1", &th) == 200 && th.Messages == 2
	})
	if st := settled(t, g); st.SetAside != 0 || th.Type != "sensor" {
		t.Fatalf("after the restart: %d set aside, type %q", st.SetAside, th.Type)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}
}

// TestShadowLimitEndToEnd (issue 11, finding 5): two 7 KB posts for one thing (--max-payload
// allows them) would merge past the 8 KB shadow. The second is never acknowledged: 5.03 "thing
// busy" while the first is being applied, then 4.13 with the size; the shadow keeps only the
// first and nothing is set aside. --max-properties 3: a fourth property gets 4.13, one replacing a
// deleted property 2.04.
func TestShadowLimitEndToEnd(t *testing.T) {
	g := startGW(t, t.TempDir(), "--process", "local", "--max-payload", "16384", "--max-properties", "3")
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := func(key string) string { return `{"` + key + `":"` + strings.Repeat("x", 7000) + `"}` }
	if resp, err := c.Post("/sensor/big-1", big("a")); err != nil || resp.Code != coapmsg.Changed {
		t.Fatalf("first 7 KB post: %v %v", resp, err)
	}
	var resp *coapmsg.Message
	waitFor(t, "the second 7 KB post to be judged", func() bool {
		resp, err = c.Post("/sensor/big-1", big("b"))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code == coapmsg.ServiceUnavailable && string(resp.Payload) == "thing busy, send again" {
			return false
		}
		return true
	})
	if resp.Code != coapmsg.RequestEntityTooLarge || string(resp.Payload) != "shadow would be 14015 bytes, over 8192" {
		t.Fatalf("second 7 KB post: %v %q, want 4.13 \"shadow would be 14015 bytes, over 8192\"", resp.Code, resp.Payload)
	}
	var sh apiShadow
	if code := getJSON(t, g, "/api/things/big-1/shadow", &sh); code != 200 || len(sh.State.Reported) != 1 || sh.State.Reported["a"] == nil {
		t.Fatalf("shadow: %d, reported keys %d", code, len(sh.State.Reported))
	}

	for _, p := range []struct {
		payload string
		code    coapmsg.Code
	}{{`{"p1":1,"p2":2}`, coapmsg.Changed}, {`{"p3":3}`, coapmsg.Changed}, {`{"p4":4}`, coapmsg.RequestEntityTooLarge}, {`{"p1":null,"p4":4}`, coapmsg.Changed}} {
		var resp *coapmsg.Message
		waitFor(t, "a judgement of "+p.payload, func() bool {
			resp, err = c.Post("/sensor/props-1", p.payload)
			if err != nil {
				t.Fatal(err)
			}
			return resp.Code != coapmsg.ServiceUnavailable
		})
		if resp.Code != p.code {
			t.Fatalf("%s: %v %q, want %v", p.payload, resp.Code, resp.Payload, p.code)
		}
	}
	if st := settled(t, g); st.Messages != 4 || st.SetAside != 0 {
		t.Fatalf("registry: %d applied, %d set aside; want 4 and 0", st.Messages, st.SetAside)
	}
	m := scrape(t, g)
	for _, r := range []string{"shadow_limit", "property_limit"} {
		if v := metricValue(t, m, `coapgw_ingest_records_total{result="`+r+`"}`); v != 1 {
			t.Errorf("%s = %v, want 1", r, v)
		}
	}
	// Both things are past half a limit: their state is kept in memory.
	if v := metricValue(t, m, "coapgw_ingest_thing_models"); v != 2 {
		t.Errorf("coapgw_ingest_thing_models = %v, want 2", v)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}
}
