package main

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
)

// TestMaxThings: local mode with --max-things 5. Five devices are accepted and applied; a sixth
// gets 5.03 "thing limit reached" with Max-Age and never reaches the registry. After a restart
// the cap still holds (the registry's five things count), and the five keep getting 2.04.
func TestMaxThings(t *testing.T) {
	dir := t.TempDir()
	const max = 5
	args := []string{"--process", "local", "--max-things", fmt.Sprint(max)}
	post := func(g *gw, id string, want coapmsg.Code) {
		t.Helper()
		c, err := coaptest.Dial(g.coap)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		resp, err := c.Post("/sensor/"+id, `{"t":1}`)
		// Right after a restart, records stored before it may still be on their way to the
		// registry; until the processor has caught up, a known thing's first record gets 5.03
		// "thing busy, send again" with Max-Age 1 (README, device contract). A device sends
		// again after Max-Age; so does this test, a few times.
		for try := 0; err == nil && try < 5 && want == coapmsg.Changed && resp.Code == coapmsg.ServiceUnavailable &&
			string(resp.Payload) == "thing busy, send again"; try++ {
			time.Sleep(time.Second)
			resp, err = c.Post("/sensor/"+id, `{"t":1}`)
		}
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if resp.Code != want {
			t.Fatalf("%s: %v %q, want %v", id, resp.Code, resp.Payload, want)
		}
		if want == coapmsg.ServiceUnavailable {
			if string(resp.Payload) != "thing limit reached" {
				t.Fatalf("%s: diagnostic %q, want \"thing limit reached\"", id, resp.Payload)
			}
			if _, ok := resp.Option(coapmsg.MaxAge); !ok {
				t.Fatalf("%s: 5.03 without Max-Age", id)
			}
		}
	}
	dev := func(i int) string { return fmt.Sprintf("dev-%d", i) }
	applied := func(g *gw, n int) {
		t.Helper()
		for i := range n {
			var th apiThing
			waitFor(t, dev(i)+" in the registry", func() bool {
				return getJSON(t, g, "/api/things/"+dev(i), &th) == 200 && th.Messages >= 1
			})
		}
	}

	g := startGW(t, dir, args...)
	for i := range max {
		post(g, dev(i), coapmsg.Changed)
	}
	post(g, dev(max), coapmsg.ServiceUnavailable)
	for i := range max {
		post(g, dev(i), coapmsg.Changed)
	}
	applied(g, max)
	if code := getJSON(t, g, "/api/things/"+dev(max), nil); code != 404 {
		t.Fatalf("%s refused, yet /api/things/%s answers %d", dev(max), dev(max), code)
	}
	m := scrape(t, g)
	if v := metricValue(t, m, `coapgw_ingest_records_total{result="thing_limit"}`); v != 1 {
		t.Errorf("thing_limit = %v, want 1", v)
	}
	if v := metricValue(t, m, "coapgw_ingest_things"); v != max {
		t.Errorf("coapgw_ingest_things = %v, want %d", v, max)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}

	g = startGW(t, dir, args...)
	if v := metricValue(t, scrape(t, g), "coapgw_ingest_things"); v != max {
		t.Errorf("after restart coapgw_ingest_things = %v, want %d (the registry's)", v, max)
	}
	post(g, dev(max+1), coapmsg.ServiceUnavailable)
	post(g, dev(max), coapmsg.ServiceUnavailable)
	for i := range max {
		post(g, dev(i), coapmsg.Changed)
	}
	var th apiThing
	waitFor(t, dev(max-1)+" with 3 messages", func() bool {
		return getJSON(t, g, "/api/things/"+dev(max-1), &th) == 200 && th.Messages >= 3
	})
	for _, id := range []string{dev(max), dev(max + 1)} {
		if code := getJSON(t, g, "/api/things/"+id, nil); code != 404 {
			t.Fatalf("%s refused, yet /api/things/%s answers %d", id, id, code)
		}
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}
}
