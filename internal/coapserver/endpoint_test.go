package coapserver

import (
	"bytes"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
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

func TestBadDatagrams(t *testing.T) {
	h := &countingHandler{}
	e, s := newTestEndpoint(h, Options{})
	cases := []struct {
		name    string
		data    []byte
		wantRST bool
	}{
		{"empty", nil, false},
		{"1 byte", []byte{0x40}, false},
		{"3 bytes", []byte{0x40, 0x01, 0x00}, false},
		{"version 0", []byte{0x00, 0x01, 0, 1}, false},
		{"version 2", []byte{0x80, 0x01, 0, 1}, false},
		{"version 3 CON", []byte{0xc0, 0x01, 0, 1}, false},
		{"dns reply", []byte{0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0}, false},
		{"tkl 9 CON", []byte{0x49, 0x01, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9}, true},
		{"tkl 15 NON", []byte{0x5f, 0x01, 0, 7}, false},
		{"payload marker then nothing CON", []byte{0x40, 0x02, 0, 8, 0xff}, true},
		{"option delta 15 CON", []byte{0x40, 0x02, 0, 9, 0xf0}, true},
		{"option length 15 NON", []byte{0x50, 0x02, 0, 9, 0x1f}, false},
		{"truncated extended delta CON", []byte{0x40, 0x02, 0, 10, 0xd0}, true},
		{"truncated 2-byte extended length CON", []byte{0x40, 0x02, 0, 11, 0x1e, 0x01}, true},
		{"option past datagram CON", []byte{0x40, 0x02, 0, 12, 0xb5, 'a'}, true},
		{"option number overflow CON", []byte{0x40, 0x02, 0, 13, 0xe0, 0xff, 0xff, 0xe0, 0xff, 0xff}, true},
		{"empty CON with token", []byte{0x41, 0x00, 0, 14, 0xaa}, true},
		{"empty CON with payload", []byte{0x40, 0x00, 0, 15, 0xff, 1}, true},
		{"empty NON", []byte{0x50, 0x00, 0, 16}, false},
		{"ACK empty", []byte{0x60, 0x00, 0, 17}, false},
		{"ACK with code", []byte{0x60, 0x44, 0, 18}, false},
		{"RST", []byte{0x70, 0x00, 0, 19}, false},
		{"RST garbage", []byte{0x70, 0x45, 0, 20, 0xff}, false},
		{"reserved class 1 CON", []byte{0x40, 0x21, 0, 21}, true},
		{"reserved class 6 NON", []byte{0x50, 0xc1, 0, 22}, false},
		{"reserved class 7 CON", []byte{0x40, 0xe0, 0, 23}, true},
		{"unsolicited 2.05 CON", []byte{0x40, 0x45, 0, 24}, true},
		{"unsolicited 4.04 NON", []byte{0x50, 0x84, 0, 25}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.HandleDatagram(peerA, c.data)
			out := s.take()
			if !c.wantRST {
				if len(out) != 0 {
					t.Fatalf("answered %x, want silence", out[0].b)
				}
				return
			}
			if len(out) != 1 {
				t.Fatalf("got %d datagrams, want one RST", len(out))
			}
			want := []byte{0x70, 0, c.data[2], c.data[3]}
			if !bytes.Equal(out[0].b, want) {
				t.Fatalf("got %x, want RST %x", out[0].b, want)
			}
		})
	}
	if h.calls != 0 {
		t.Fatalf("handler called %d times for bad datagrams", h.calls)
	}
	if n := e.DedupEntries(); n != 0 {
		t.Fatalf("%d dedup entries created by bad datagrams", n)
	}
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

func TestNONGetsNONWithNewMID(t *testing.T) {
	e, s := newTestEndpoint(&countingHandler{}, Options{})
	e.HandleDatagram(peerA, enc(t, post(coapmsg.NonConfirmable, 77, "tk")))
	out := s.take()
	if len(out) != 1 {
		t.Fatalf("%d responses", len(out))
	}
	r := dec(t, out[0].b)
	if r.Type != coapmsg.NonConfirmable || string(r.Token) != "tk" || r.Code != coapmsg.Changed {
		t.Fatalf("got %v %x %v", r.Type, r.Token, r.Code)
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
