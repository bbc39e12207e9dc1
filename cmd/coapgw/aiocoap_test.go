package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestAiocoapClient talks to the gateway with aiocoap's client (TESTPLAN B16): every request of
// the device contract gets the documented answer, and only the accepted records are stored.
func TestAiocoapClient(t *testing.T) {
	if err := exec.Command("python3", "-c", "import aiocoap").Run(); err != nil {
		if os.Getenv("COAPGW_REQUIRE_PEERS") != "" {
			t.Fatal("aiocoap not installed (pip install aiocoap)")
		}
		t.Skip("aiocoap not installed; scripts/test.sh installs it")
	}
	dir := t.TempDir()
	g := startGW(t, dir)
	out, err := exec.Command("python3", "testdata/aiocoap_client.py", g.coap.String()).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("aiocoap client: %v\n%s\n%s", err, out, stderr)
	}
	type answer struct {
		Name          string `json:"name"`
		Code          string `json:"code"`
		Type          string `json:"type"`
		Payload       string `json:"payload"`
		ContentFormat *int   `json:"content_format"`
		Echoed        bool   `json:"echoed"`
	}
	got := map[string]answer{}
	for line := range strings.Lines(string(out)) {
		var a answer
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("client output %q: %v", line, err)
		}
		got[a.Name] = a
	}
	for _, w := range []struct {
		name, code, typ, payload string // payload: a substring of the answer's
		cf                       int    // -1: no Content-Format
	}{
		{"post", "2.04", "ACK", "", -1},
		{"put", "2.04", "ACK", "", -1},
		{"post-non", "2.04", "NON", "", -1},
		{"well-known", "2.05", "ACK", `</health>;rt="coapgw.health";ct=50`, 40},
		{"well-known-rt", "2.05", "ACK", `</health>`, 40},
		{"health", "2.05", "ACK", `"status":"ok"`, 50},
		{"bad-json", "4.00", "ACK", "invalid JSON", -1},
		{"not-object", "4.00", "ACK", "JSON object", -1},
		{"xml", "4.15", "ACK", "content-format", -1},
		{"bad-id", "4.00", "ACK", "id must match", -1},
		{"three-segments", "4.00", "ACK", "/{type}/{id}", -1},
		{"delete", "4.05", "ACK", "", -1},
		{"unknown", "4.04", "ACK", "", -1},
		{"blockwise", "2.04", "ACK", "", -1}, // 1,512 bytes: aiocoap sends them block-wise (Block1)
	} {
		a, ok := got[w.name]
		if !ok {
			t.Errorf("%s: no answer", w.name)
			continue
		}
		cf := -1
		if a.ContentFormat != nil {
			cf = *a.ContentFormat
		}
		if a.Code != w.code || a.Type != w.typ || !strings.Contains(a.Payload, w.payload) || cf != w.cf {
			t.Errorf("%s: %s %s cf %d %q, want %s %s cf %d containing %q", w.name, a.Code, a.Type, cf, a.Payload, w.code, w.typ, w.cf, w.payload)
		}
	}
	// /health's answer is more than three times aiocoap's request: the gateway verified the
	// client's address with an Echo round trip first (RFC 9175).
	if !got["health"].Echoed || got["well-known"].Echoed || got["post"].Echoed {
		t.Errorf("Echo round trips: health %v, well-known %v, post %v; want only health's",
			got["health"].Echoed, got["well-known"].Echoed, got["post"].Echoed)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	recs := spoolRecords(t, dir)
	var stored []string
	for _, r := range recs {
		stored = append(stored, r.Type+"/"+r.ID+" "+string(r.Payload))
	}
	want := []string{`sensor/aio-1 {"temp":21.5}`, `sensor/aio-1 {"temp":22}`, `sensor/aio-2 {"non":true}`,
		`sensor/aio-4 {"pad":"` + strings.Repeat("x", 1500) + `"}`}
	if strings.Join(stored, "\n") != strings.Join(want, "\n") {
		t.Errorf("spool holds\n%s\nwant\n%s", strings.Join(stored, "\n"), strings.Join(want, "\n"))
	}
}
