package coapserver

import (
	"bytes"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type sent struct {
	peer netip.AddrPort
	b    []byte
}

type fakeSender struct {
	mu  sync.Mutex
	out []sent
}

func (f *fakeSender) Send(p netip.AddrPort, b []byte) {
	f.mu.Lock()
	f.out = append(f.out, sent{p, append([]byte(nil), b...)})
	f.mu.Unlock()
}

func (f *fakeSender) take() []sent {
	f.mu.Lock()
	defer f.mu.Unlock()
	o := f.out
	f.out = nil
	return o
}

var peerA = netip.MustParseAddrPort("192.0.2.1:1000")
var peerB = netip.MustParseAddrPort("192.0.2.2:1000")

func enc(t testing.TB, m coapmsg.Message) []byte {
	t.Helper()
	b, err := m.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func dec(t testing.TB, b []byte) *coapmsg.Message {
	t.Helper()
	var m coapmsg.Message
	if err := m.Decode(b); err != nil {
		t.Fatalf("decode response %x: %v", b, err)
	}
	return &m
}

func post(typ coapmsg.Type, mid uint16, token string) coapmsg.Message {
	return coapmsg.Message{Type: typ, Code: coapmsg.POST, MID: mid, Token: []byte(token),
		Options: []coapmsg.Option{{Number: coapmsg.URIPath, Value: []byte("t")}, {Number: coapmsg.URIPath, Value: []byte("i")}},
		Payload: []byte(`{}`)}
}

// countingHandler answers 2.04 and counts calls.
type countingHandler struct {
	mu    sync.Mutex
	calls int
}

func (h *countingHandler) ServeCoAP(w *ResponseWriter, r *Request) {
	h.mu.Lock()
	h.calls++
	h.mu.Unlock()
	w.Respond(coapmsg.Changed, nil)
}

func newTestEndpoint(h Handler, opts Options) (*Endpoint, *fakeSender) {
	s := &fakeSender{}
	return NewEndpoint(h, s, opts, nil, nil), s
}

// TestBadDatagrams: RFC 7252 §3, §4.2, §4.3 — bad datagrams create no state, are answered only
// with an RST to a CON whose header parses, and each moves exactly one datagram counter.
func TestBadDatagrams(t *testing.T) {
	h := &countingHandler{}
	reg := prometheus.NewRegistry()
	s := &fakeSender{}
	e := NewEndpoint(h, s, Options{}, nil, NewMetrics(reg))
	cases := []struct {
		name    string
		data    []byte
		wantRST bool
		disp    string // the coapgw_coap_datagrams_total series that must go up by one
	}{
		{"empty", nil, false, "short"},
		{"1 byte", []byte{0x40}, false, "short"},
		{"3 bytes", []byte{0x40, 0x01, 0x00}, false, "short"},
		{"version 0", []byte{0x00, 0x01, 0, 1}, false, "bad_version"},
		{"version 2", []byte{0x80, 0x01, 0, 1}, false, "bad_version"},
		{"version 3 CON", []byte{0xc0, 0x01, 0, 1}, false, "bad_version"},
		{"dns reply", []byte{0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0}, false, "bad_version"},
		{"tkl 9 CON", []byte{0x49, 0x01, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9}, true, "format_error"},
		{"tkl 15 NON", []byte{0x5f, 0x01, 0, 7}, false, "format_error"},
		{"payload marker then nothing CON", []byte{0x40, 0x02, 0, 8, 0xff}, true, "format_error"},
		{"option delta 15 CON", []byte{0x40, 0x02, 0, 9, 0xf0}, true, "format_error"},
		{"option length 15 NON", []byte{0x50, 0x02, 0, 9, 0x1f}, false, "format_error"},
		{"truncated extended delta CON", []byte{0x40, 0x02, 0, 10, 0xd0}, true, "format_error"},
		{"truncated 2-byte extended length CON", []byte{0x40, 0x02, 0, 11, 0x1e, 0x01}, true, "format_error"},
		{"option past datagram CON", []byte{0x40, 0x02, 0, 12, 0xb5, 'a'}, true, "format_error"},
		{"option number overflow CON", []byte{0x40, 0x02, 0, 13, 0xe0, 0xff, 0xff, 0xe0, 0xff, 0xff}, true, "format_error"},
		{"empty CON with token", []byte{0x41, 0x00, 0, 14, 0xaa}, true, "format_error"},
		{"empty CON with payload", []byte{0x40, 0x00, 0, 15, 0xff, 1}, true, "format_error"},
		{"empty NON", []byte{0x50, 0x00, 0, 16}, false, "format_error"},
		{"ACK empty", []byte{0x60, 0x00, 0, 17}, false, "ack_rst"},
		{"ACK with code", []byte{0x60, 0x44, 0, 18}, false, "ack_rst"},
		{"RST", []byte{0x70, 0x00, 0, 19}, false, "ack_rst"},
		{"RST garbage", []byte{0x70, 0x45, 0, 20, 0xff}, false, "format_error"},
		{"reserved class 1 CON", []byte{0x40, 0x21, 0, 21}, true, "unsolicited"},
		{"reserved class 6 NON", []byte{0x50, 0xc1, 0, 22}, false, "unsolicited"},
		{"reserved class 7 CON", []byte{0x40, 0xe0, 0, 23}, true, "unsolicited"},
		{"unsolicited 2.05 CON", []byte{0x40, 0x45, 0, 24}, true, "unsolicited"},
		{"unsolicited 4.04 NON", []byte{0x50, 0x84, 0, 25}, false, "unsolicited"},
		{"65 options NON", manyOptions(coapmsg.NonConfirmable, coapmsg.POST, 26, coapmsg.MaxOptions+1), false, "too_many_options"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := counters(t, reg)
			e.HandleDatagram(peerA, c.data)
			out := s.take()
			// Exactly the expected counters moved, each by one: the disposition, and the RST
			// response counter only when an RST was sent.
			want := map[string]float64{`coapgw_coap_datagrams_total{disposition="` + c.disp + `"}`: 1}
			if c.wantRST {
				want[`coapgw_coap_responses_total{code="rst"}`] = 1
			}
			if got := counterDelta(before, counters(t, reg)); !maps.Equal(got, want) {
				t.Errorf("counter changes = %v, want %v", got, want)
			}
			if !c.wantRST {
				if len(out) != 0 {
					t.Fatalf("answered %x, want silence", out[0].b)
				}
				return
			}
			if len(out) != 1 {
				t.Fatalf("got %d datagrams, want one RST", len(out))
			}
			rst := []byte{0x70, 0, c.data[2], c.data[3]}
			if !bytes.Equal(out[0].b, rst) {
				t.Fatalf("got %x, want RST %x", out[0].b, rst)
			}
		})
	}
	if h.calls != 0 {
		t.Fatalf("handler called %d times for bad datagrams", h.calls)
	}
	if n := e.DedupEntries(); n != 0 {
		t.Fatalf("%d dedup entries created by bad datagrams", n)
	}
	// The totals, by their exported names.
	const wantTotals = `# HELP coapgw_coap_datagrams_total CoAP datagrams received, by disposition.
# TYPE coapgw_coap_datagrams_total counter
coapgw_coap_datagrams_total{disposition="ack_rst"} 3
coapgw_coap_datagrams_total{disposition="bad_version"} 4
coapgw_coap_datagrams_total{disposition="duplicate"} 0
coapgw_coap_datagrams_total{disposition="format_error"} 13
coapgw_coap_datagrams_total{disposition="oversized"} 0
coapgw_coap_datagrams_total{disposition="ping"} 0
coapgw_coap_datagrams_total{disposition="request"} 0
coapgw_coap_datagrams_total{disposition="short"} 3
coapgw_coap_datagrams_total{disposition="too_many_options"} 1
coapgw_coap_datagrams_total{disposition="unsolicited"} 5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(wantTotals), "coapgw_coap_datagrams_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.ToFloat64(e.m.rst); n != 12 {
		t.Errorf("%v RSTs counted, want 12", n)
	}
}

// counters reads every counter series in reg, keyed name{label="value",...}.
func counters(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.GetCounter() == nil {
				continue
			}
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := mf.GetName()
			if len(ls) > 0 {
				key += "{" + strings.Join(ls, ",") + "}"
			}
			out[key] = m.GetCounter().GetValue()
		}
	}
	return out
}

// counterDelta is after − before for the series that changed.
func counterDelta(before, after map[string]float64) map[string]float64 {
	d := make(map[string]float64)
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

func TestPingGetsRST(t *testing.T) {
	e, s := newTestEndpoint(&countingHandler{}, Options{})
	e.HandleDatagram(peerA, []byte{0x40, 0x00, 0x12, 0x34})
	out := s.take()
	if len(out) != 1 || !bytes.Equal(out[0].b, []byte{0x70, 0x00, 0x12, 0x34}) {
		t.Fatalf("ping answer = %v, want RST with MID 0x1234", out)
	}
}

func TestPiggybackAndTokens(t *testing.T) {
	e, s := newTestEndpoint(&countingHandler{}, Options{})
	for n := 0; n <= 8; n++ {
		tok := string(bytes.Repeat([]byte{byte(0xa0 + n)}, n))
		e.HandleDatagram(peerA, enc(t, post(coapmsg.Confirmable, uint16(100+n), tok)))
		out := s.take()
		if len(out) != 1 {
			t.Fatalf("token %d: %d responses", n, len(out))
		}
		r := dec(t, out[0].b)
		if r.Type != coapmsg.Acknowledgement || r.MID != uint16(100+n) || string(r.Token) != tok || r.Code != coapmsg.Changed {
			t.Fatalf("token len %d: got %v %d %x %v", n, r.Type, r.MID, r.Token, r.Code)
		}
	}
}

// TestNONGetsNONWithNewMID: RFC 7252 §5.2.3 — a NON request is answered with a NON response that is
// a new message from the server's own MID space (§4.4), echoing only the token.
func TestNONGetsNONWithNewMID(t *testing.T) {
	e, s := newTestEndpoint(&countingHandler{}, Options{})
	// Request MIDs far from the endpoint's next MID, so a response MID equal to the request's can
	// only be an echo.
	m1 := uint16(e.mid.Load()) + 0x8000
	m2 := m1 + 1
	mids := map[uint16]bool{}
	for _, rq := range []struct {
		peer netip.AddrPort
		mid  uint16
	}{{peerA, m1}, {peerA, m2}, {peerB, m1}} {
		e.HandleDatagram(rq.peer, enc(t, post(coapmsg.NonConfirmable, rq.mid, "tk")))
		out := s.take()
		if len(out) != 1 {
			t.Fatalf("%d responses", len(out))
		}
		r := dec(t, out[0].b)
		if r.Type != coapmsg.NonConfirmable || string(r.Token) != "tk" || r.Code != coapmsg.Changed {
			t.Fatalf("got %v %x %v", r.Type, r.Token, r.Code)
		}
		if r.MID == rq.mid {
			t.Errorf("NON response echoes the request MID %d", r.MID)
		}
		if mids[r.MID] {
			t.Errorf("response MID %d reused for another NON request", r.MID)
		}
		mids[r.MID] = true
	}
}

// TestNONDuplicateExpiresAfterNonLifetime: RFC 7252 §4.5 — a NON duplicate (same peer and MID) is
// ignored for NON_LIFETIME (145 s, §4.8.2) and is a new message after it; the shorter window than
// the CON one (247 s) is checked too.
func TestNONDuplicateExpiresAfterNonLifetime(t *testing.T) {
	h := &countingHandler{}
	e, s := newTestEndpoint(h, Options{})
	now := time.Unix(1000, 0)
	e.clock = func() time.Time { return now }
	e.epoch = now
	req := enc(t, post(coapmsg.NonConfirmable, 9, "n"))
	e.HandleDatagram(peerA, req)
	if out := s.take(); len(out) != 1 {
		t.Fatalf("first NON: %d responses, want 1", len(out))
	}
	now = now.Add(144 * time.Second)
	e.HandleDatagram(peerA, req)
	if out := s.take(); len(out) != 0 || h.calls != 1 {
		t.Fatalf("duplicate at 144 s: %d responses, %d calls; want 0 and 1", len(out), h.calls)
	}
	now = now.Add(2 * time.Second)
	e.HandleDatagram(peerA, req)
	if out := s.take(); len(out) != 1 || h.calls != 2 {
		t.Fatalf("same MID at 146 s: %d responses, %d calls; want 1 and 2", len(out), h.calls)
	}
}

func TestDuplicates(t *testing.T) {
	h := &countingHandler{}
	e, s := newTestEndpoint(h, Options{})
	req := enc(t, post(coapmsg.Confirmable, 5, "abc"))
	var first []byte
	for i := 0; i < 5; i++ {
		e.HandleDatagram(peerA, req)
		out := s.take()
		if len(out) != 1 {
			t.Fatalf("try %d: %d responses", i, len(out))
		}
		if i == 0 {
			first = out[0].b
		} else if !bytes.Equal(out[0].b, first) {
			t.Fatalf("try %d: response %x differs from first %x", i, out[0].b, first)
		}
	}
	if h.calls != 1 {
		t.Fatalf("handler called %d times for 5 copies, want 1", h.calls)
	}
	// Same MID and token from another peer is a new message.
	e.HandleDatagram(peerB, req)
	if len(s.take()) != 1 || h.calls != 2 {
		t.Fatalf("other peer: calls = %d, want 2", h.calls)
	}
	// NON duplicates are ignored.
	non := enc(t, post(coapmsg.NonConfirmable, 6, "x"))
	e.HandleDatagram(peerA, non)
	e.HandleDatagram(peerA, non)
	if out := s.take(); len(out) != 1 || h.calls != 3 {
		t.Fatalf("NON duplicate: %d responses, %d calls; want 1 and 3", len(out), h.calls)
	}
}

func TestDuplicateExpiresAfterLifetime(t *testing.T) {
	h := &countingHandler{}
	e, s := newTestEndpoint(h, Options{})
	now := time.Unix(1000, 0)
	e.clock = func() time.Time { return now }
	e.epoch = now
	req := enc(t, post(coapmsg.Confirmable, 9, ""))
	e.HandleDatagram(peerA, req)
	now = now.Add(246 * time.Second)
	e.HandleDatagram(peerA, req)
	if h.calls != 1 {
		t.Fatalf("within 247 s: calls = %d, want 1", h.calls)
	}
	now = now.Add(2 * time.Second)
	e.HandleDatagram(peerA, req)
	if h.calls != 2 {
		t.Fatalf("after 247 s: calls = %d, want 2", h.calls)
	}
	s.take()
}

func TestDedupBounded(t *testing.T) {
	h := &countingHandler{}
	e, s := newTestEndpoint(h, Options{DedupGlobalCap: 640, DedupPerPeerCap: 16, DedupShards: 4})
	for i := 0; i < 100; i++ {
		e.HandleDatagram(peerA, enc(t, post(coapmsg.Confirmable, uint16(i), "")))
	}
	if n := e.DedupEntries(); n != 16 {
		t.Fatalf("one peer: %d entries, want per-peer cap 16", n)
	}
	// The newest 16 are still deduplicated; the oldest were evicted.
	e.HandleDatagram(peerA, enc(t, post(coapmsg.Confirmable, 99, "")))
	if h.calls != 100 {
		t.Fatalf("newest MID handled again: calls = %d", h.calls)
	}
	for i := 0; i < 5000; i++ {
		p := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 5683)
		e.HandleDatagram(p, enc(t, post(coapmsg.Confirmable, 1, "")))
	}
	if n := e.DedupEntries(); n > 640 {
		t.Fatalf("%d entries, want at most the global cap 640", n)
	}
	s.take()
}

// deferHandler answers later, when release is called.
type deferHandler struct {
	mu sync.Mutex
	ws []*ResponseWriter
}

func (h *deferHandler) ServeCoAP(w *ResponseWriter, r *Request) {
	w.Defer()
	h.mu.Lock()
	h.ws = append(h.ws, w)
	h.mu.Unlock()
}

func (h *deferHandler) release(code coapmsg.Code) {
	h.mu.Lock()
	ws := h.ws
	h.ws = nil
	h.mu.Unlock()
	for _, w := range ws {
		w.Respond(code, nil)
	}
}

func TestDeferredWithinDeadlineIsPiggybacked(t *testing.T) {
	h := &deferHandler{}
	e, s := newTestEndpoint(h, Options{PiggybackDeadline: time.Hour})
	req := enc(t, post(coapmsg.Confirmable, 42, "t1"))
	e.HandleDatagram(peerA, req)
	e.HandleDatagram(peerA, req) // duplicate while in flight: dropped
	if out := s.take(); len(out) != 0 {
		t.Fatalf("answered before the handler did: %x", out[0].b)
	}
	h.release(coapmsg.Changed)
	out := s.take()
	if len(out) != 1 {
		t.Fatalf("%d responses", len(out))
	}
	if r := dec(t, out[0].b); r.Type != coapmsg.Acknowledgement || r.MID != 42 || r.Code != coapmsg.Changed {
		t.Fatalf("got %v %d %v", r.Type, r.MID, r.Code)
	}
	if e.Inflight() != 0 {
		t.Fatalf("inflight = %d after response", e.Inflight())
	}
}

func TestSlowResponseGoesSeparate(t *testing.T) {
	h := &deferHandler{}
	e, s := newTestEndpoint(h, Options{PiggybackDeadline: 40 * time.Millisecond, AckTimeout: 50 * time.Millisecond, MaxRetransmit: 2})
	e.Start()
	defer e.Stop()
	req := enc(t, post(coapmsg.Confirmable, 300, "sep"))
	e.HandleDatagram(peerA, req)
	var out []sent
	for i := 0; i < 200 && len(out) == 0; i++ {
		time.Sleep(5 * time.Millisecond)
		out = s.take()
	}
	if len(out) != 1 || !bytes.Equal(out[0].b, []byte{0x60, 0, 0x01, 0x2c}) {
		t.Fatalf("want an empty ACK for MID 300, got %v", out)
	}
	// A duplicate now gets the empty ACK again.
	e.HandleDatagram(peerA, req)
	if out := s.take(); len(out) != 1 || !bytes.Equal(out[0].b, []byte{0x60, 0, 0x01, 0x2c}) {
		t.Fatalf("duplicate after empty ACK: %v", out)
	}
	h.release(coapmsg.Changed)
	out = s.take()
	if len(out) != 1 {
		t.Fatalf("%d separate responses", len(out))
	}
	r := dec(t, out[0].b)
	if r.Type != coapmsg.Confirmable || string(r.Token) != "sep" || r.Code != coapmsg.Changed {
		t.Fatalf("separate response %v %x %v", r.Type, r.Token, r.Code)
	}
	// It is retransmitted until acknowledged.
	var re []sent
	for i := 0; i < 100 && len(re) == 0; i++ {
		time.Sleep(5 * time.Millisecond)
		re = s.take()
	}
	if len(re) == 0 || !bytes.Equal(re[0].b, out[0].b) {
		t.Fatalf("no retransmission of the separate response")
	}
	ack := []byte{0x60, 0, byte(r.MID >> 8), byte(r.MID)}
	e.HandleDatagram(peerA, ack)
	time.Sleep(150 * time.Millisecond)
	if more := s.take(); len(more) != 0 {
		t.Fatalf("retransmitted after ACK: %d", len(more))
	}
}

func TestMalformedMidExchangeKeepsState(t *testing.T) {
	h := &deferHandler{}
	e, s := newTestEndpoint(h, Options{PiggybackDeadline: time.Hour})
	req := enc(t, post(coapmsg.Confirmable, 500, "k"))
	e.HandleDatagram(peerA, req)
	e.HandleDatagram(peerA, []byte{0x40, 0x02, 0x01, 0xf4, 0xff}) // malformed, same MID
	s.take()
	h.release(coapmsg.Changed)
	out := s.take()
	if len(out) != 1 || dec(t, out[0].b).MID != 500 {
		t.Fatalf("in-flight exchange lost after a malformed datagram: %v", out)
	}
	e.HandleDatagram(peerA, req)
	if out := s.take(); len(out) != 1 || dec(t, out[0].b).Code != coapmsg.Changed {
		t.Fatalf("dedup state lost after a malformed datagram")
	}
}

func BenchmarkHandleDatagram(b *testing.B) {
	e := NewEndpoint(&countingHandler{}, discard{}, Options{}, nil, nil)
	reqs := make([][]byte, 1024)
	for i := range reqs {
		reqs[i] = enc(b, post(coapmsg.Confirmable, uint16(i), "abcd"))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 18), byte(i >> 10)}), 5683)
		e.HandleDatagram(p, reqs[i%1024])
	}
}

type discard struct{}

func (discard) Send(netip.AddrPort, []byte) {}

// TestDedupQueuesStayBounded: a quiet peer's entry at the head of the expiry queue must not let
// the evicted entries of a busy peer pile up behind it until it expires.
func TestDedupQueuesStayBounded(t *testing.T) {
	e, s := newTestEndpoint(&countingHandler{}, Options{DedupGlobalCap: 100_000, DedupPerPeerCap: 16, DedupShards: 1})
	e.HandleDatagram(peerB, enc(t, post(coapmsg.Confirmable, 1, "")))
	for i := 0; i < 20_000; i++ {
		e.HandleDatagram(peerA, enc(t, post(coapmsg.Confirmable, uint16(i), "")))
		s.take()
	}
	sh := &e.dedup.shards[0]
	if n := len(sh.m); n != 17 {
		t.Fatalf("%d live entries, want 16 + 1", n)
	}
	if q := sh.con.len(); q > 2*len(sh.m)+1024+1 {
		t.Fatalf("expiry queue holds %d items for %d live entries", q, len(sh.m))
	}
	for _, ps := range sh.peers {
		if q := ps.q.len(); q > 2*ps.live+17 {
			t.Fatalf("peer queue holds %d items for %d live entries", q, ps.live)
		}
	}
}

// separateExchange drives a CON request into a separate response on a fake clock, without the
// timer goroutine: the test calls e.tick itself. It returns the separate CON response as sent.
func separateExchange(t *testing.T) (e *Endpoint, s *fakeSender, m *Metrics, now *time.Time, sep []byte) {
	t.Helper()
	h := &deferHandler{}
	s = &fakeSender{}
	m = NewMetrics(prometheus.NewRegistry())
	e = NewEndpoint(h, s, Options{}, nil, m) // RFC 7252 defaults: ACK_TIMEOUT 2 s, MAX_RETRANSMIT 4
	now = new(time.Time)
	*now = time.Unix(1000, 0)
	e.clock = func() time.Time { return *now }
	e.epoch = *now
	e.HandleDatagram(peerA, enc(t, post(coapmsg.Confirmable, 300, "sep")))
	*now = now.Add(e.opts.PiggybackDeadline)
	e.tick()
	if out := s.take(); len(out) != 1 || !bytes.Equal(out[0].b, []byte{0x60, 0, 0x01, 0x2c}) {
		t.Fatalf("want an empty ACK for MID 300, got %v", out)
	}
	h.release(coapmsg.Changed)
	out := s.take()
	if len(out) != 1 {
		t.Fatalf("%d separate responses", len(out))
	}
	if r := dec(t, out[0].b); r.Type != coapmsg.Confirmable || string(r.Token) != "sep" || r.Code != coapmsg.Changed {
		t.Fatalf("separate response %v %x %v", r.Type, r.Token, r.Code)
	}
	return e, s, m, now, out[0].b
}

// runTimers advances the fake clock by d in 10 ms steps, ticking each time, and returns the
// datagrams sent with the time since start each was sent at.
func runTimers(e *Endpoint, s *fakeSender, now *time.Time, d time.Duration) (out []sent, at []time.Duration) {
	const step = 10 * time.Millisecond
	for el := step; el <= d; el += step {
		*now = now.Add(step)
		e.tick()
		for _, o := range s.take() {
			out = append(out, o)
			at = append(at, el)
		}
	}
	return out, at
}

// TestSeparateResponseGivesUpAfterMaxRetransmit: RFC 7252 §4.2 — a separate CON response nobody
// acknowledges is retransmitted MAX_RETRANSMIT (4) times, each timeout twice the previous one,
// starting in [ACK_TIMEOUT, ACK_TIMEOUT × 1.5); it is given up only when the last timeout expires
// (MAX_TRANSMIT_WAIT, 31 × the first timeout) and never sent again.
func TestSeparateResponseGivesUpAfterMaxRetransmit(t *testing.T) {
	e, s, m, now, sep := separateExchange(t)
	// With the first timeout T0 in [2 s, 3 s), the 4th retransmission is at 15·T0 < 45 s and the
	// give-up at 31·T0 ≥ 62 s.
	out, at := runTimers(e, s, now, 46*time.Second)
	if len(out) != 4 {
		t.Fatalf("%d retransmissions in 46 s, want MAX_RETRANSMIT = 4 (at %v)", len(out), at)
	}
	for i, o := range out {
		if o.peer != peerA || !bytes.Equal(o.b, sep) {
			t.Fatalf("retransmission %d = %x to %v, want %x to %v", i, o.b, o.peer, sep, peerA)
		}
	}
	if t0 := at[0]; t0 < 2*time.Second || t0 >= 3*time.Second {
		t.Errorf("first retransmission after %v, want in [2 s, 3 s)", t0)
	}
	const slack = 20 * time.Millisecond // the clock advances in 10 ms steps
	for i, prev := 1, at[0]; i < len(at); i, prev = i+1, at[i]-at[i-1] {
		if g := at[i] - at[i-1]; g < 2*prev-slack || g > 2*prev+slack {
			t.Errorf("timeout %d = %v, want twice %v", i, g, prev)
		}
	}
	if got := testutil.ToFloat64(m.separateGaveUp); got != 0 {
		t.Fatalf("gave up before the last timeout expired")
	}
	if more, at := runTimers(e, s, now, 200*time.Second); len(more) != 0 {
		t.Fatalf("%d more retransmissions (at %v)", len(more), at)
	}
	for name, c := range map[string]struct {
		ctr  prometheus.Counter
		want float64
	}{
		"separate":    {m.separate, 1},
		"retransmits": {m.separateRetransmits, 4},
		"gave up":     {m.separateGaveUp, 1},
		"acked":       {m.separateAcked, 0},
		"rejected":    {m.separateRejected, 0},
		"empty ACKs":  {m.emptyAcks, 1},
	} {
		if got := testutil.ToFloat64(c.ctr); got != c.want {
			t.Errorf("%s counter = %v, want %v", name, got, c.want)
		}
	}
	// A late ACK finds nothing outstanding and is not answered.
	r := dec(t, sep)
	e.HandleDatagram(peerA, []byte{0x60, 0, byte(r.MID >> 8), byte(r.MID)})
	if got := testutil.ToFloat64(m.separateAcked); got != 0 || len(s.take()) != 0 {
		t.Errorf("late ACK matched a given-up response (acked = %v)", got)
	}
}

// TestSeparateResponseStopsOnRST: RFC 7252 §4.2 — a peer may reject a CON with an empty RST of the
// same MID; that ends retransmission as an ACK would. An RST from another peer does not.
func TestSeparateResponseStopsOnRST(t *testing.T) {
	e, s, m, now, sep := separateExchange(t)
	if out, _ := runTimers(e, s, now, 3*time.Second); len(out) != 1 || !bytes.Equal(out[0].b, sep) {
		t.Fatalf("want one retransmission within 3 s, got %v", out)
	}
	r := dec(t, sep)
	rst := []byte{0x70, 0, byte(r.MID >> 8), byte(r.MID)}
	e.HandleDatagram(peerB, rst) // wrong peer: must not cancel
	if out, _ := runTimers(e, s, now, 6*time.Second); len(out) != 1 {
		t.Fatalf("after an RST from another peer: %d retransmissions in 6 s, want 1", len(out))
	}
	e.HandleDatagram(peerA, rst)
	if out := s.take(); len(out) != 0 {
		t.Fatalf("RST answered with %x", out[0].b)
	}
	if out, at := runTimers(e, s, now, 200*time.Second); len(out) != 0 {
		t.Fatalf("retransmitted %d times after RST (at %v)", len(out), at)
	}
	if got := testutil.ToFloat64(m.separateRetransmits); got != 2 {
		t.Errorf("retransmissions counter = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.separateRejected); got != 1 {
		t.Errorf("rejected counter = %v after RST, want 1", got)
	}
	if got := testutil.ToFloat64(m.separateAcked); got != 0 {
		t.Errorf("acked counter = %v after RST, want 0: an RST is not an acknowledgement", got)
	}
	if got := testutil.ToFloat64(m.separateGaveUp); got != 0 {
		t.Errorf("gave-up counter = %v after RST, want 0", got)
	}
}
