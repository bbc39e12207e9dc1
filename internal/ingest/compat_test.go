package ingest

import (
	"testing"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestCompatSeedGETIsTelemetry: with --compat seed a GET with a JSON payload on /{type}/{id} is
// stored exactly as a POST and answered 2.04 with the text RECEIVED OK, as are POST and PUT;
// without the mode the same GET gets 4.05 and nothing is stored.
func TestCompatSeedGETIsTelemetry(t *testing.T) {
	const payload = `{"metric1":7,"metric2":19}`
	off := newRigWith(t, Config{GatewayID: "gw"})
	if resp := off.do(coapmsg.GET, pathOpts("x-node", "xxxx-ssss-1111-2222"), payload); resp.Code != coapmsg.MethodNotAllowed {
		t.Fatalf("compat off, GET with payload: %v %q, want 4.05", resp.Code, resp.Payload)
	}
	if n := off.sp.stored(); n != 0 {
		t.Fatalf("compat off: %d records stored, want 0", n)
	}
	if resp := off.do(coapmsg.POST, pathOpts("x-node", "a"), payload); resp.Code != coapmsg.Changed || len(resp.Payload) != 0 {
		t.Fatalf("compat off, POST: %v %q, want a bare 2.04", resp.Code, resp.Payload)
	}

	r := newRigWith(t, Config{GatewayID: "gw", CompatSeed: true})
	for i, m := range []coapmsg.Code{coapmsg.GET, coapmsg.POST, coapmsg.PUT} {
		resp := r.do(m, pathOpts("x-node", "xxxx-ssss-1111-2222"), payload)
		if resp.Code != coapmsg.Changed || string(resp.Payload) != "RECEIVED OK" {
			t.Fatalf("compat seed, %v: %v %q, want 2.04 RECEIVED OK", m, resp.Code, resp.Payload)
		}
		if n, ok := contentFormatOf(resp); !ok || n != 0 {
			t.Fatalf("compat seed, %v: Content-Format %d %v, want 0 (text/plain)", m, n, ok)
		}
		if n := r.sp.stored(); n != i+1 {
			t.Fatalf("compat seed, after %v: %d records stored, want %d", m, n, i+1)
		}
	}
	if n := testutil.ToFloat64(r.h.getWrites); n != 1 {
		t.Fatalf("coapgw_ingest_get_writes_total %v, want 1", n)
	}
	var rec record.Record
	if err := record.Decode(r.sp.data[0], &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Type != "x-node" || rec.ID != "xxxx-ssss-1111-2222" || string(rec.Payload) != payload || rec.ContentFormat != record.NoContentFormat {
		t.Fatalf("the GET's record: %+v", rec)
	}
	// A GET without payload is still no write: 4.05 here (no Deltas), nothing stored.
	if resp := r.do(coapmsg.GET, pathOpts("x-node", "xxxx-ssss-1111-2222"), ""); resp.Code != coapmsg.MethodNotAllowed {
		t.Fatalf("compat seed, GET without payload: %v %q, want 4.05", resp.Code, resp.Payload)
	}
	// /health keeps its GET whatever it carries (2.05, or 4.01 with an Echo to a small request).
	if resp := r.do(coapmsg.GET, pathOpts("health"), "{}"); resp.Code != coapmsg.Content && resp.Code != coapmsg.Unauthorized {
		t.Fatalf("compat seed, GET /health with a payload: %v %q", resp.Code, resp.Payload)
	}
	if n := r.sp.stored(); n != 3 {
		t.Fatalf("%d records stored, want 3", n)
	}
}

// TestCompatSeedGETDownlink: in local mode a GET without payload still returns the thing's
// delta with --compat seed, and a GET with one is telemetry.
func TestCompatSeedGETDownlink(t *testing.T) {
	const msg = `{"state":{"interval":60},"version":7}`
	d := &fakeDeltas{m: map[string][]byte{"dev-1": []byte(msg)}}
	r := newRigWith(t, Config{GatewayID: "gw", Deltas: d, CompatSeed: true})
	if resp := r.do(coapmsg.GET, pathOpts("sensor", "dev-1"), ""); resp.Code != coapmsg.Content || string(resp.Payload) != msg {
		t.Fatalf("GET without payload: %v %q, want 2.05 %q", resp.Code, resp.Payload, msg)
	}
	if resp := r.do(coapmsg.GET, pathOpts("sensor", "dev-1"), `{"t":1}`); resp.Code != coapmsg.Changed || string(resp.Payload) != "RECEIVED OK" {
		t.Fatalf("GET with payload: %v %q, want 2.04 RECEIVED OK", resp.Code, resp.Payload)
	}
	if n := r.sp.stored(); n != 1 {
		t.Fatalf("%d records stored, want 1", n)
	}
}

// TestCompatSeedFailures: with --compat seed every failure keeps its code (4.00, 4.15, 4.13,
// 5.03 with Max-Age) and carries FAILURE as its text; nothing is stored.
func TestCompatSeedFailures(t *testing.T) {
	sp := &fakeSpool{}
	r := newRigSpool(t, Config{GatewayID: "gw", CompatSeed: true, MaxPayload: 64}, sp)
	for _, c := range []struct {
		name    string
		method  coapmsg.Code
		opts    []coapmsg.Option
		payload string
		want    coapmsg.Code
	}{
		{"not JSON", coapmsg.GET, pathOpts("x-node", "a"), "hello", coapmsg.BadRequest},
		{"bad name", coapmsg.GET, pathOpts("x node", "a"), `{"a":1}`, coapmsg.BadRequest},
		{"one segment", coapmsg.GET, pathOpts("x-node"), `{"a":1}`, coapmsg.BadRequest},
		{"empty POST", coapmsg.POST, pathOpts("x-node", "a"), "", coapmsg.BadRequest},
		{"format", coapmsg.GET, append(pathOpts("x-node", "a"), cf(41)), `{"a":1}`, coapmsg.UnsupportedFormat},
		{"too large", coapmsg.GET, pathOpts("x-node", "a"), `{"a":"` + string(make([]byte, 80)) + `"}`, coapmsg.RequestEntityTooLarge},
	} {
		resp := r.do(c.method, c.opts, c.payload)
		if resp.Code != c.want || string(resp.Payload) != "FAILURE" {
			t.Errorf("%s: %v %q, want %v FAILURE", c.name, resp.Code, resp.Payload, c.want)
		}
	}
	sp.fail = spool.ErrFull
	resp := r.do(coapmsg.GET, pathOpts("x-node", "a"), `{"a":1}`)
	if resp.Code != coapmsg.ServiceUnavailable || string(resp.Payload) != "FAILURE" || maxAge(t, resp) == 0 {
		t.Fatalf("spool full: %v %q, want 5.03 FAILURE with Max-Age", resp.Code, resp.Payload)
	}
	if n := sp.stored(); n != 0 {
		t.Fatalf("%d records stored, want 0", n)
	}
}

// TestJSONOnly: with --envelope seed (JSONOnly) CBOR and SenML get 4.15 before anything is
// stored; JSON, with Content-Format 50 or none, is stored.
func TestJSONOnly(t *testing.T) {
	r := newRigWith(t, Config{GatewayID: "gw", JSONOnly: true})
	for f, p := range benchPayloads {
		want := coapmsg.UnsupportedFormat
		if f == record.FormatJSON {
			want = coapmsg.Changed
		}
		if resp := r.do(coapmsg.POST, append(pathOpts("s", "d"), cf(byte(f))), string(p)); resp.Code != want {
			t.Errorf("format %d: %v %q, want %v", f, resp.Code, resp.Payload, want)
		}
	}
	if resp := r.do(coapmsg.POST, pathOpts("s", "d"), `{"a":1}`); resp.Code != coapmsg.Changed {
		t.Fatalf("no Content-Format: %v %q", resp.Code, resp.Payload)
	}
	if n := r.sp.stored(); n != 2 {
		t.Fatalf("%d records stored, want 2", n)
	}
}

// BenchmarkServeCoAPCompat is BenchmarkServeCoAP with --compat seed, beside the default: the
// default path must not pay for the mode (compare the two in one run).
func BenchmarkServeCoAPCompat(b *testing.B) {
	b.Run("default", func(b *testing.B) { benchServeCoAP(b, Config{GatewayID: "gw"}) })
	b.Run("compat-seed", func(b *testing.B) { benchServeCoAP(b, Config{GatewayID: "gw", CompatSeed: true}) })
}
