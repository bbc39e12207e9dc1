package ingest

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/spool"
	"github.com/fxamacker/cbor/v2"
)

// fakeDeltas is a Deltas with fixed messages by thing name.
type fakeDeltas struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (f *fakeDeltas) Delta(name []byte) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m[string(name)]
}

func accept(n byte) coapmsg.Option { return coapmsg.Option{Number: coapmsg.Accept, Value: []byte{n}} }

func contentFormatOf(m *coapmsg.Message) (uint32, bool) {
	v, ok := m.Option(coapmsg.ContentFormat)
	n, _ := coapmsg.Uint(v)
	return n, ok
}

// TestDeltaInTheAnswer: a report with Accept: 50 gets its thing's delta in the 2.04, with
// Content-Format 50, with Accept: 60 in CBOR; without Accept, or for a thing without a delta,
// the 2.04 stays bare; a 5.03 never carries it.
func TestDeltaInTheAnswer(t *testing.T) {
	const msg = `{"state":{"interval":60},"version":7}`
	d := &fakeDeltas{m: map[string][]byte{"dev-1": []byte(msg)}}
	sp := &fakeSpool{}
	r := newRigSpool(t, Config{GatewayID: "gw", Deltas: d}, sp)
	payload := `{"temp":21.5,"hum":40}`

	resp := r.do(coapmsg.POST, append(pathOpts("sensor", "dev-1"), cf(50), accept(50)), payload)
	if resp.Code != coapmsg.Changed || string(resp.Payload) != msg {
		t.Fatalf("with Accept: %v %q, want 2.04 %q", resp.Code, resp.Payload, msg)
	}
	if n, ok := contentFormatOf(resp); !ok || n != 50 {
		t.Fatalf("Content-Format %d %v, want 50", n, ok)
	}
	// Accept: 60 gets the same message in CBOR.
	resp = r.do(coapmsg.POST, append(pathOpts("sensor", "dev-1"), cf(50), accept(60)), payload)
	var got struct {
		State   map[string]any `cbor:"state"`
		Version uint64         `cbor:"version"`
	}
	if n, _ := contentFormatOf(resp); resp.Code != coapmsg.Changed || n != 60 || cbor.Unmarshal(resp.Payload, &got) != nil ||
		got.Version != 7 || len(got.State) != 1 || got.State["interval"] != uint64(60) {
		t.Fatalf("Accept: 60: %v cf %d %x (%+v), want 2.04 with the delta in CBOR", resp.Code, n, resp.Payload, got)
	}
	for name, opts := range map[string][]coapmsg.Option{
		"no Accept":               append(pathOpts("sensor", "dev-1"), cf(50)),
		"other thing":             append(pathOpts("sensor", "dev-2"), cf(50), accept(50)),
		"other thing, Accept: 60": append(pathOpts("sensor", "dev-2"), cf(50), accept(60)),
	} {
		resp := r.do(coapmsg.POST, opts, payload)
		if resp.Code != coapmsg.Changed || len(resp.Payload) != 0 {
			t.Errorf("%s: %v %q, want a bare 2.04", name, resp.Code, resp.Payload)
		}
		if _, ok := contentFormatOf(resp); ok {
			t.Errorf("%s: Content-Format on a bare 2.04", name)
		}
	}
	sp.fail = errors.Join(spool.ErrFull)
	resp = r.do(coapmsg.POST, append(pathOpts("sensor", "dev-1"), cf(50), accept(50)), payload)
	if resp.Code != coapmsg.ServiceUnavailable || strings.Contains(string(resp.Payload), "interval") {
		t.Fatalf("spool full: %v %q, want 5.03 without the delta", resp.Code, resp.Payload)
	}
}

// TestDeltaAmplification: a plain CoAP report too small for its delta (more than three times
// its size) gets a bare 2.04 with an Echo option; the next report carrying that Echo gets the
// delta. Over DTLS the peer is verified and needs none. GET /{type}/{id} returns the delta.
func TestDeltaAmplification(t *testing.T) {
	msg := `{"state":{"mode":"` + strings.Repeat("x", 150) + `"},"version":3}`
	d := &fakeDeltas{m: map[string][]byte{"d": []byte(msg)}}
	r := newRigWith(t, Config{GatewayID: "gw", Deltas: d})
	opts := func(extra ...coapmsg.Option) []coapmsg.Option {
		return append(append(pathOpts("s", "d"), accept(50)), extra...)
	}
	resp := r.do(coapmsg.POST, opts(), `{"t":1}`)
	echo, ok := resp.Option(coapmsg.Echo)
	if resp.Code != coapmsg.Changed || len(resp.Payload) != 0 || !ok || len(echo) != echoLen {
		t.Fatalf("small request: %v %q echo %x, want a bare 2.04 with an Echo", resp.Code, resp.Payload, echo)
	}
	resp = r.do(coapmsg.POST, opts(coapmsg.Option{Number: coapmsg.Echo, Value: echo}), `{"t":2}`)
	if resp.Code != coapmsg.Changed || string(resp.Payload) != msg {
		t.Fatalf("with the Echo: %v %q, want the delta", resp.Code, resp.Payload)
	}
	if r.sp.stored() != 2 {
		t.Fatalf("%d records stored, want 2", r.sp.stored())
	}

	// GET: the same amplification rule as /health, 4.01 with Echo first.
	resp = r.do(coapmsg.GET, pathOpts("s", "d"), "")
	echo, _ = resp.Option(coapmsg.Echo)
	if resp.Code != coapmsg.Unauthorized || len(echo) != echoLen {
		t.Fatalf("GET: %v, want 4.01 with an Echo", resp.Code)
	}
	resp = r.do(coapmsg.GET, append(pathOpts("s", "d"), coapmsg.Option{Number: coapmsg.Echo, Value: echo}), "")
	if resp.Code != coapmsg.Content || string(resp.Payload) != msg {
		t.Fatalf("GET with the Echo: %v %q", resp.Code, resp.Payload)
	}
	resp = r.do(coapmsg.GET, pathOpts("s", "other"), "")
	if resp.Code != coapmsg.Content || string(resp.Payload) != `{"state":{}}` {
		t.Fatalf("GET of a thing without a delta: %v %q", resp.Code, resp.Payload)
	}
	resp = r.do(coapmsg.DELETE, pathOpts("s", "d"), "")
	if resp.Code != coapmsg.MethodNotAllowed {
		t.Fatalf("DELETE: %v", resp.Code)
	}
}

// TestGetWithoutDeltas: outside local mode GET /{type}/{id} stays 4.05.
func TestGetWithoutDeltas(t *testing.T) {
	r := newRig(t)
	if resp := r.do(coapmsg.GET, pathOpts("s", "d"), ""); resp.Code != coapmsg.MethodNotAllowed {
		t.Fatalf("GET: %v, want 4.05", resp.Code)
	}
}

// BenchmarkServeCoAPDeltas is BenchmarkServeCoAP with the delta lookup: the device asks for
// deltas (Accept: 50) and the registry holds deltas for other things, none for this one, so the
// cost is the lookup's alone (docs/benchmarks.md).
func BenchmarkServeCoAPDeltas(b *testing.B) {
	d := &lockFreeDeltas{m: map[string][]byte{}}
	for i := range 1000 {
		d.m["other-"+string(rune('a'+i%26))+strings.Repeat("x", i%7)] = []byte(`{"state":{"a":1},"version":1}`)
	}
	benchServeCoAPWith(b, Config{GatewayID: "gw", Deltas: d}, accept(50))
}

// lockFreeDeltas is a read-only Deltas, as cheap as the registry's.
type lockFreeDeltas struct{ m map[string][]byte }

func (f *lockFreeDeltas) Delta(name []byte) []byte { return f.m[string(name)] }

// TestObserveThing: a device observes only its own thing (over DTLS, another thing's GET gets
// 4.03 and registers nothing), and NotifyThing sends its observers the thing's new delta.
func TestObserveThing(t *testing.T) {
	d := &fakeDeltas{m: map[string][]byte{}}
	r := newRigWith(t, Config{GatewayID: "gw", Deltas: d})
	r.h.AddNotifier(r.ep.Notify)
	get := func(path string) *coapmsg.Message {
		t.Helper()
		r.mid++
		m := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.GET, MID: r.mid, Token: []byte{7, 7},
			Options: append([]coapmsg.Option{{Number: coapmsg.Observe}}, pathOpts("sensor", path)...)}
		b, err := m.Append(nil)
		if err != nil {
			t.Fatal(err)
		}
		r.ep.HandleSession(peer, peer, "sensor/dev-1", b)
		out := r.take()
		if len(out) != 1 {
			t.Fatalf("%d answers", len(out))
		}
		return decode(t, out[0])
	}
	if resp := get("dev-2"); resp.Code != coapmsg.Forbidden || r.ep.Observers() != 0 {
		t.Fatalf("another thing: %v, %d observers", resp.Code, r.ep.Observers())
	}
	resp := get("dev-1")
	if _, ok := resp.Option(coapmsg.Observe); resp.Code != coapmsg.Content || !ok || string(resp.Payload) != `{"state":{}}` || r.ep.Observers() != 1 {
		t.Fatalf("own thing: %v %q observe %v, %d observers", resp.Code, resp.Payload, ok, r.ep.Observers())
	}
	d.mu.Lock()
	d.m["dev-1"] = []byte(`{"state":{"x":1},"version":4}`)
	d.mu.Unlock()
	r.h.NotifyThing("dev-2") // nobody observes it
	if out := r.take(); len(out) != 0 {
		t.Fatalf("%d datagrams for an unobserved thing", len(out))
	}
	r.h.NotifyThing("dev-1")
	out := r.take()
	if len(out) != 1 {
		t.Fatalf("%d notifications", len(out))
	}
	if n := decode(t, out[0]); string(n.Payload) != `{"state":{"x":1},"version":4}` || string(n.Token) != "\x07\x07" {
		t.Fatalf("notification %q token %x", n.Payload, n.Token)
	}
}

// TestGetAndObserveCBOR: GET /{type}/{id} with Accept: 60 answers the delta in CBOR (before, it
// got 4.06: the resource was JSON only), a CBOR observer is notified in CBOR while a JSON
// observer of the same thing gets JSON, and an Accept the device API cannot give gets 4.06.
func TestGetAndObserveCBOR(t *testing.T) {
	d := &fakeDeltas{m: map[string][]byte{"dev-1": []byte(`{"state":{"interval":60},"version":2}`)}}
	r := newRigWith(t, Config{GatewayID: "gw", Deltas: d})
	r.h.AddNotifier(r.ep.Notify)
	get := func(token byte, opts ...coapmsg.Option) *coapmsg.Message {
		t.Helper()
		r.mid++
		all := append(opts, pathOpts("sensor", "dev-1")...)
		slices.SortStableFunc(all, func(a, b coapmsg.Option) int { return int(a.Number) - int(b.Number) })
		m := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.GET, MID: r.mid, Token: []byte{token}, Options: all}
		b, err := m.Append(nil)
		if err != nil {
			t.Fatal(err)
		}
		r.ep.HandleSession(peer, peer, "sensor/dev-1", b)
		out := r.take()
		if len(out) != 1 {
			t.Fatalf("%d answers", len(out))
		}
		return decode(t, out[0])
	}
	type msg struct {
		State   map[string]int `cbor:"state"`
		Version int            `cbor:"version"`
	}
	resp := get(1, accept(60))
	var got msg
	if n, _ := contentFormatOf(resp); resp.Code != coapmsg.Content || n != 60 || cbor.Unmarshal(resp.Payload, &got) != nil || got.State["interval"] != 60 || got.Version != 2 {
		t.Fatalf("GET Accept 60: %v cf %d %x (%+v), want 2.05 with the delta in CBOR", resp.Code, n, resp.Payload, got)
	}
	if resp := get(2, accept(0)); resp.Code != coapmsg.NotAcceptable {
		t.Fatalf("GET Accept 0: %v, want 4.06", resp.Code)
	}
	// Two observers: one in CBOR, one in JSON.
	if resp := get(3, coapmsg.Option{Number: coapmsg.Observe}, accept(60)); resp.Code != coapmsg.Content {
		t.Fatalf("observe in CBOR: %v", resp.Code)
	}
	if resp := get(4, coapmsg.Option{Number: coapmsg.Observe}); resp.Code != coapmsg.Content || r.ep.Observers() != 2 {
		t.Fatalf("observe in JSON: %v, %d observers", resp.Code, r.ep.Observers())
	}
	d.mu.Lock()
	d.m["dev-1"] = []byte(`{"state":{"interval":30},"version":3}`)
	d.mu.Unlock()
	r.h.NotifyThing("dev-1")
	out := r.take()
	if len(out) != 2 {
		t.Fatalf("%d notifications, want 2", len(out))
	}
	for _, b := range out {
		n := decode(t, b)
		cf, _ := contentFormatOf(n)
		switch n.Token[0] {
		case 3:
			var m msg
			if cf != 60 || cbor.Unmarshal(n.Payload, &m) != nil || m.State["interval"] != 30 || m.Version != 3 {
				t.Errorf("CBOR observer: cf %d %x", cf, n.Payload)
			}
		case 4:
			if cf != 50 || string(n.Payload) != `{"state":{"interval":30},"version":3}` {
				t.Errorf("JSON observer: cf %d %q", cf, n.Payload)
			}
		default:
			t.Errorf("notification for token %x", n.Token)
		}
	}
}
