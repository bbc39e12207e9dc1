package ingest

import (
	"net/netip"
	"testing"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/spool"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestPipelineOrder pins the order pipeline.go states: validation before draining and the rate
// limit (a malformed request gets its 4.xx in any state and costs its device no token), draining
// before the rate limit.
func TestPipelineOrder(t *testing.T) {
	r := newRigWith(t, Config{GatewayID: "gw-test", DeviceRate: 1, DeviceBurst: 1})
	if resp := r.do(coapmsg.POST, pathOpts("a", "b"), `{`); resp.Code != coapmsg.BadRequest {
		t.Fatalf("invalid JSON: %v, want 4.00", resp.Code)
	}
	// The invalid request took no token: the device still has its burst of one.
	if resp := r.do(coapmsg.POST, pathOpts("a", "b"), `{}`); resp.Code != coapmsg.Changed {
		t.Fatalf("first valid request: %v %q, want 2.04", resp.Code, resp.Payload)
	}
	if resp := r.do(coapmsg.POST, pathOpts("a", "b"), `{}`); resp.Code != coapmsg.ServiceUnavailable ||
		string(resp.Payload) != "device over its rate limit" {
		t.Fatalf("second valid request: %v %q, want 5.03 rate limit", resp.Code, resp.Payload)
	}
	// Over its rate, an invalid request is still told what is wrong with it.
	if resp := r.do(coapmsg.POST, pathOpts("a", "b"), `[]`); resp.Code != coapmsg.BadRequest {
		t.Fatalf("invalid request over the rate: %v, want 4.00", resp.Code)
	}
	r.h.Drain()
	if resp := r.do(coapmsg.POST, pathOpts("a", "b"), `{`); resp.Code != coapmsg.BadRequest {
		t.Fatalf("invalid request while draining: %v, want 4.00", resp.Code)
	}
	if resp := r.do(coapmsg.POST, pathOpts("a", "b"), `{}`); resp.Code != coapmsg.ServiceUnavailable ||
		string(resp.Payload) != "gateway shutting down" {
		t.Fatalf("over the rate while draining: %v %q, want 5.03 shutting down", resp.Code, resp.Payload)
	}
	for res, want := range map[result]float64{resAccepted: 1, resRejected: 3, resLimited: 1, resDraining: 1} {
		if got := testutil.ToFloat64(r.h.results[res]); got != want {
			t.Errorf("result %d counted %v, want %v", res, got, want)
		}
	}
}

// TestOptionRejectionsCounted: a request the exchange layer refuses for a bad critical option
// counts as rejected, CON or NON, on any resource; a proxy request (5.05) does not.
func TestOptionRejectionsCounted(t *testing.T) {
	r := newRig(t)
	r.do(coapmsg.POST, append(pathOpts("a", "b"), opt(9, "x")), `{}`)
	r.send(coapmsg.NonConfirmable, coapmsg.POST, nil, append(pathOpts("a", "b"), opt(9, "x")), `{}`)
	r.do(coapmsg.GET, append(pathOpts("health"), opt(coapmsg.Accept, "\x00\x00\x32")), "")
	if resp := r.do(coapmsg.POST, append(pathOpts("a", "b"), opt(coapmsg.ProxyURI, "coap://x/")), `{}`); resp.Code != coapmsg.ProxyingNotSupported {
		t.Fatalf("Proxy-Uri: %v", resp.Code)
	}
	if got := testutil.ToFloat64(r.h.results[resRejected]); got != 3 {
		t.Fatalf("rejected = %v, want 3", got)
	}
}

// nopSpool stores nothing and answers at once, without copying: what is left to allocate is
// the device API's and the exchange layer's own.
type nopSpool struct{ n int }

func (s *nopSpool) Append(b []byte, done func(uint64, error)) error {
	s.n++
	done(uint64(s.n), nil)
	return nil
}

func (s *nopSpool) Stats() spool.Stats { return spool.Stats{} }

// TestTelemetryNoAlloc: a telemetry request, from datagram to 2.04 through the exchange layer,
// the pipeline (with the rate limit on) and the spool append, allocates one object: the
// exchange's ResponseWriter.
func TestTelemetryNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	sp := &nopSpool{}
	h, err := New(Config{GatewayID: "gw", DeviceRate: 1 << 30, DeviceBurst: 1 << 30}, sp, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &lastCode{}
	ep := coapserver.NewEndpoint(h, c, coapserver.Options{DedupPerPeerCap: 64}, nil, nil)
	m := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, Token: []byte{1, 2, 3, 4},
		Options: append(pathOpts("sensor", "dev-1"), cf(50)), Payload: []byte(`{"temp":21.5,"hum":40}`)}
	reqs := make([][]byte, 256)
	for i := range reqs {
		m.MID = uint16(i)
		reqs[i], _ = m.Append(nil)
	}
	p := netip.MustParseAddrPort("192.0.2.1:5683")
	i := 0
	step := func() {
		ep.HandleDatagram(p, reqs[i%len(reqs)])
		i++
	}
	for range 2 * len(reqs) { // past the per-peer dedup cap, pools warm
		step()
	}
	if n := testing.AllocsPerRun(1000, step); n > 1 {
		t.Fatalf("%v allocs per telemetry request, want at most 1 (the ResponseWriter)", n)
	}
	if h.Accepted() != uint64(sp.n) || sp.n < 1000 || c.n != sp.n || c.code != coapmsg.Changed {
		t.Fatalf("%d accepted, %d appended, %d answers, the last %v; want all 2.04", h.Accepted(), sp.n, c.n, c.code)
	}
}

// lastCode counts answers and keeps the code of the last, without allocating.
type lastCode struct {
	n    int
	code coapmsg.Code
}

func (l *lastCode) Send(_ netip.AddrPort, b []byte) { l.n, l.code = l.n+1, coapmsg.Code(b[1]) }
