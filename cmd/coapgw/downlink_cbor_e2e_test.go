package main

import (
	"bytes"
	"net/http"
	"os/exec"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// TestDownlinkDeltaCBOR: a device that reports with Accept: 60 (libcoap's coap-client) gets its
// thing's delta in CBOR in the 2.04 (local mode; the AWS mode's deltas take the same step).
func TestDownlinkDeltaCBOR(t *testing.T) {
	bin := coapClient(t)
	g, token := startDownlinkGW(t)
	uri := "coap://" + g.coap.String() + "/sensor/dev-1"
	post := func(accept string) []byte {
		t.Helper()
		out, err := exec.Command(bin, "-m", "post", "-t", "50", "-A", accept, "-e", `{"temp":20}`, uri).Output()
		if err != nil {
			t.Fatalf("coap-client: %v %q", err, out)
		}
		return bytes.TrimSpace(out)
	}
	if out := post("60"); len(out) != 0 {
		t.Fatalf("answer without desired state: %q", out)
	}
	var th apiThing
	waitFor(t, "dev-1 in the registry", func() bool { return getJSON(t, g, "/api/things/dev-1", &th) == 200 })
	if code, body := httpPut(t, "http://"+g.http+"/api/things/dev-1/shadow", token, `{"state":{"desired":{"interval":60,"gain":0.5}}}`); code != http.StatusOK {
		t.Fatalf("PUT desired: %d %s", code, body)
	}
	var got struct {
		State   map[string]any `cbor:"state"`
		Version uint64         `cbor:"version"`
	}
	out := post("60")
	if err := cbor.Unmarshal(out, &got); err != nil || got.Version < 2 || got.State["interval"] != uint64(60) || got.State["gain"] != 0.5 || len(got.State) != 2 {
		t.Fatalf("answer with Accept: 60: %x (%+v, %v), want the delta in CBOR", out, got, err)
	}
	if out := post("50"); !bytes.HasPrefix(out, []byte(`{"state":{"gain":0.5,"interval":60},"version":`)) {
		t.Fatalf("answer with Accept: 50: %q", out)
	}
}
