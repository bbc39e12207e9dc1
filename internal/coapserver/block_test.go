package coapserver

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// bodyHandler answers 2.04 and keeps every body it was given (a copy), with the Block1 it saw.
type bodyHandler struct {
	mu     sync.Mutex
	bodies []string
	paths  []string
}

func (h *bodyHandler) ServeCoAP(w *ResponseWriter, r *Request) {
	h.mu.Lock()
	h.bodies = append(h.bodies, string(r.Payload()))
	var segs []string
	for i := range r.NumPath() {
		segs = append(segs, string(r.Path(i)))
	}
	h.paths = append(h.paths, strings.Join(segs, "/"))
	h.mu.Unlock()
	w.Respond(coapmsg.Changed, nil)
}

// blockReq is a CON POST to path carrying block num of body in blocks of 2^(szx+4) bytes, with
// the M bit set unless it is the last, and extra options.
func blockReq(mid uint16, path string, body []byte, num uint32, szx uint8, extra ...coapmsg.Option) coapmsg.Message {
	size := 1 << (szx + 4)
	off := min(int(num)*size, len(body))
	end := min(off+size, len(body))
	m := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: mid, Token: []byte{byte(mid >> 8), byte(mid)}, Payload: body[off:end]}
	for _, seg := range strings.Split(path, "/") {
		m.Options = append(m.Options, o(coapmsg.URIPath, seg))
	}
	m.Options = append(m.Options, coapmsg.Option{Number: coapmsg.Block1, Value: coapmsg.AppendBlock(nil, num, end < len(body), szx)})
	m.Options = append(m.Options, extra...)
	sortOpts(m.Options)
	return m
}

func sortOpts(o []coapmsg.Option) { sortOptions(o, 1) }

// answer decodes the one datagram s holds: its code and its Block1 option ("" without one).
func answer(t *testing.T, s *fakeSender) (coapmsg.Code, string, *coapmsg.Message) {
	t.Helper()
	out := s.take()
	if len(out) != 1 {
		t.Fatalf("%d answers, want 1", len(out))
	}
	m := dec(t, out[0].b)
	b1 := ""
	if v, ok := m.Option(coapmsg.Block1); ok {
		num, more, szx, _ := coapmsg.ParseBlock(v)
		b1 = fmt.Sprintf("%d/%v/%d", num, more, 1<<(szx+4))
	}
	return m.Code, b1, m
}

func testBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

func blockOpts1(maxBody int) Options {
	return Options{BlockWise: true, MaxRequestBody: maxBody}
}

// TestBlock1Reassembly: a 3,000-byte body in 1,024-byte blocks gets 2.31 Continue with Block1
// echoed (M set) for the first two blocks, and the handler sees one request with the whole body
// at the last, whose 2.04 echoes Block1 without M; the reassembly then holds nothing.
func TestBlock1Reassembly(t *testing.T) {
	h := &bodyHandler{}
	reg := prometheus.NewRegistry()
	e := NewEndpoint(h, &fakeSender{}, blockOpts1(8192), nil, NewMetrics(reg))
	s := e.out.(*fakeSender)
	b := testBody(3000)
	want := []struct {
		code coapmsg.Code
		b1   string
	}{{coapmsg.Continue, "0/true/1024"}, {coapmsg.Continue, "1/true/1024"}, {coapmsg.Changed, "2/false/1024"}}
	for i, w := range want {
		e.HandleDatagram(peerA, enc(t, blockReq(uint16(10+i), "sensor/d1", b, uint32(i), 6)))
		code, b1, _ := answer(t, s)
		if code != w.code || b1 != w.b1 {
			t.Fatalf("block %d: %v Block1 %s, want %v %s", i, code, b1, w.code, w.b1)
		}
		if i < 2 && len(h.bodies) != 0 {
			t.Fatalf("handler called at block %d", i)
		}
	}
	if len(h.bodies) != 1 || h.bodies[0] != string(b) || h.paths[0] != "sensor/d1" {
		t.Fatalf("handler got %d bodies (%v), want the 3000-byte body once", len(h.bodies), h.paths)
	}
	if n, bytes := e.BlockBodies(); n != 0 || bytes != 0 {
		t.Fatalf("reassembly holds %d bodies, %d bytes after completion", n, bytes)
	}
	c := counters(t, reg)
	if c[`coapgw_coap_block1_total{outcome="continued"}`] != 2 || c[`coapgw_coap_block1_total{outcome="completed"}`] != 1 {
		t.Fatalf("counters %v", c)
	}
}

// TestBlock1Retransmission: a retransmitted block (same MID) is answered from deduplication with
// the same 2.31, and the body reaches the handler once, whole.
func TestBlock1Retransmission(t *testing.T) {
	h := &bodyHandler{}
	e, s := newTestEndpoint(h, blockOpts1(8192))
	b := testBody(2500)
	e.HandleDatagram(peerA, enc(t, blockReq(1, "a/b", b, 0, 6)))
	first := s.take()
	e.HandleDatagram(peerA, enc(t, blockReq(1, "a/b", b, 0, 6)))
	again := s.take()
	if len(first) != 1 || len(again) != 1 || !bytes.Equal(first[0].b, again[0].b) || dec(t, again[0].b).Code != coapmsg.Continue {
		t.Fatalf("retransmission answered %v, first %v", again, first)
	}
	e.HandleDatagram(peerA, enc(t, blockReq(2, "a/b", b, 1, 6)))
	e.HandleDatagram(peerA, enc(t, blockReq(2, "a/b", b, 1, 6)))
	e.HandleDatagram(peerA, enc(t, blockReq(3, "a/b", b, 2, 6)))
	e.HandleDatagram(peerA, enc(t, blockReq(3, "a/b", b, 2, 6)))
	out := s.take()
	if len(out) != 4 || dec(t, out[3].b).Code != coapmsg.Changed || !bytes.Equal(out[2].b, out[3].b) {
		t.Fatalf("answers %d", len(out))
	}
	// A block restated with a new MID (its answer lost, the client gave up on the exchange) is
	// taken again in place.
	e.HandleDatagram(peerA, enc(t, blockReq(4, "a/b", b, 0, 6)))
	e.HandleDatagram(peerA, enc(t, blockReq(5, "a/b", b, 1, 6)))
	e.HandleDatagram(peerA, enc(t, blockReq(6, "a/b", b, 1, 6)))
	e.HandleDatagram(peerA, enc(t, blockReq(7, "a/b", b, 2, 6)))
	for i, a := range s.take() {
		if c := dec(t, a.b).Code; (i < 3 && c != coapmsg.Continue) || (i == 3 && c != coapmsg.Changed) {
			t.Fatalf("restated transfer, answer %d: %v", i, c)
		}
	}
	if len(h.bodies) != 2 || h.bodies[0] != string(b) || h.bodies[1] != string(b) {
		t.Fatalf("handler got %d bodies, want the body twice (once per transfer)", len(h.bodies))
	}
}

// TestBlock1Incomplete: a missing middle block, a block after a body was dropped, and a last
// block without a start all get 4.08 Request Entity Incomplete; nothing reaches the handler.
func TestBlock1Incomplete(t *testing.T) {
	h := &bodyHandler{}
	reg := prometheus.NewRegistry()
	e := NewEndpoint(h, &fakeSender{}, blockOpts1(8192), nil, NewMetrics(reg))
	s := e.out.(*fakeSender)
	b := testBody(4000)
	steps := []struct {
		num  uint32
		want coapmsg.Code
	}{
		{0, coapmsg.Continue},
		{2, coapmsg.RequestEntityIncomplete}, // block 1 missing: the body is dropped
		{3, coapmsg.RequestEntityIncomplete}, // the last block, no body to finish
		{1, coapmsg.RequestEntityIncomplete}, // nor to continue
	}
	for i, st := range steps {
		e.HandleDatagram(peerA, enc(t, blockReq(uint16(i+1), "a/b", b, st.num, 6)))
		if code, _, m := answer(t, s); code != st.want {
			t.Fatalf("step %d (block %d): %v %q, want %v", i, st.num, code, m.Payload, st.want)
		}
	}
	if len(h.bodies) != 0 {
		t.Fatalf("handler called %d times", len(h.bodies))
	}
	if n, _ := e.BlockBodies(); n != 0 {
		t.Fatalf("%d bodies held", n)
	}
	if c := counters(t, reg)[`coapgw_coap_block1_total{outcome="incomplete"}`]; c != 3 {
		t.Fatalf("incomplete counted %v, want 3", c)
	}
}

// TestBlock1TooLarge: a Size1 over the limit gets 4.13 with Size1 = the limit (and Block1, the
// block size taken) at the first block, and a body growing past it gets 4.13 before its last
// block; nothing is handled.
func TestBlock1TooLarge(t *testing.T) {
	h := &bodyHandler{}
	e, s := newTestEndpoint(h, blockOpts1(2048))
	b := testBody(5000)
	size1 := func(n uint32) coapmsg.Option {
		return coapmsg.Option{Number: coapmsg.Size1, Value: coapmsg.AppendUint(nil, n)}
	}
	e.HandleDatagram(peerA, enc(t, blockReq(1, "a/b", b, 0, 6, size1(5000))))
	code, b1, m := answer(t, s)
	if v, _ := m.Option(coapmsg.Size1); code != coapmsg.RequestEntityTooLarge || !bytes.Equal(v, []byte{0x08, 0x00}) || b1 != "0/false/1024" {
		t.Fatalf("Size1 5000: %v Size1 %x Block1 %s, want 4.13 with Size1 2048 and Block1 0/false/1024", code, v, b1)
	}
	for i, want := range []coapmsg.Code{coapmsg.Continue, coapmsg.Continue, coapmsg.RequestEntityTooLarge} {
		e.HandleDatagram(peerA, enc(t, blockReq(uint16(10+i), "a/b", b, uint32(i), 6)))
		if code, _, m := answer(t, s); code != want {
			t.Fatalf("block %d of 5000 bytes: %v %q, want %v", i, code, m.Payload, want)
		}
	}
	if n, _ := e.BlockBodies(); n != 0 {
		t.Fatalf("%d bodies held after 4.13", n)
	}
	// A body of exactly the limit passes.
	b = testBody(2048)
	for i := range 2 {
		e.HandleDatagram(peerA, enc(t, blockReq(uint16(20+i), "a/b", b, uint32(i), 6)))
	}
	if out := s.take(); len(out) != 2 || dec(t, out[1].b).Code != coapmsg.Changed || len(h.bodies) != 1 || len(h.bodies[0]) != 2048 {
		t.Fatalf("2048 bytes in 2 blocks: %d answers, bodies %d", len(out), len(h.bodies))
	}
}

// TestBlock1Malformed: Block1 in a GET gets 4.02, SZX 7 or a block with M shorter than its size
// 4.00; a POST to another path or with another Request-Tag is another body.
func TestBlock1Malformed(t *testing.T) {
	h := &bodyHandler{}
	e, s := newTestEndpoint(h, blockOpts1(8192))
	b := testBody(3000)
	get := blockReq(1, "a/b", b, 0, 6)
	get.Code = coapmsg.GET
	e.HandleDatagram(peerA, enc(t, get))
	if code, _, m := answer(t, s); code != coapmsg.BadOption || string(m.Payload) != "Block1 in a request without a body" {
		t.Fatalf("Block1 in GET: %v %q", code, m.Payload)
	}
	r := blockReq(2, "a/b", b, 0, 6)
	r.Options[len(r.Options)-1].Value = []byte{0x0f} // 0/M/SZX 7
	e.HandleDatagram(peerA, enc(t, r))
	if code, _, _ := answer(t, s); code != coapmsg.BadRequest {
		t.Fatalf("SZX 7: %v", code)
	}
	r = blockReq(3, "a/b", b, 0, 6)
	r.Payload = r.Payload[:1000]
	e.HandleDatagram(peerA, enc(t, r))
	if code, _, _ := answer(t, s); code != coapmsg.BadRequest {
		t.Fatalf("short block with M: %v", code)
	}
	// Two bodies of one peer interleaved: to two paths, and to one path with two Request-Tags.
	tag := func(v string) coapmsg.Option { return o(coapmsg.RequestTag, v) }
	b2 := bytes.ToUpper(b)
	mid := uint16(100)
	send := func(m coapmsg.Message) {
		e.HandleDatagram(peerA, enc(t, m))
		mid++
	}
	for i := range uint32(3) {
		send(blockReq(mid, "a/b", b, i, 6))
		send(blockReq(mid, "a/c", b2, i, 6))
		send(blockReq(mid, "a/d", b, i, 6, tag("1")))
		send(blockReq(mid, "a/d", b2, i, 6, tag("2")))
	}
	s.take()
	got := map[string]bool{}
	for i := range h.bodies {
		got[h.paths[i]+" "+h.bodies[i][:3]] = true
	}
	if len(h.bodies) != 4 || !got["a/b abc"] || !got["a/c ABC"] || !got["a/d abc"] || !got["a/d ABC"] {
		t.Fatalf("bodies %v", got)
	}
}

// TestBlock1LateNegotiation: with BlockSize 256, a client's 1,024-byte block is taken and the
// 2.31 asks for 256-byte blocks (RFC 7959 §2.5); the client continues at block 4 of 256 bytes.
func TestBlock1LateNegotiation(t *testing.T) {
	h := &bodyHandler{}
	o := blockOpts1(8192)
	o.BlockSize = 256
	e, s := newTestEndpoint(h, o)
	b := testBody(1500)
	e.HandleDatagram(peerA, enc(t, blockReq(1, "a/b", b, 0, 6)))
	if code, b1, _ := answer(t, s); code != coapmsg.Continue || b1 != "0/true/256" {
		t.Fatalf("first block: %v %s, want 2.31 0/true/256", code, b1)
	}
	for i, want := range []string{"4/true/256", "5/false/256"} {
		e.HandleDatagram(peerA, enc(t, blockReq(uint16(2+i), "a/b", b, uint32(4+i), 4)))
		if _, b1, _ := answer(t, s); b1 != want {
			t.Fatalf("block %d: Block1 %s, want %s", 4+i, b1, want)
		}
	}
	if len(h.bodies) != 1 || h.bodies[0] != string(b) {
		t.Fatalf("bodies %d", len(h.bodies))
	}
}

// TestBlock1Bounds: a peer's bodies beyond BlockPerPeer replace its least recently active; the
// bytes held never exceed BlockMaxBytes (the least recently active bodies go first); a body with
// no block for BlockTimeout is dropped by the timer; each is counted, and the gauges follow.
func TestBlock1Bounds(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	o := blockOpts1(4096)
	o.BlockPerPeer, o.BlockMaxBytes, o.BlockTimeout = 2, 3*(4096+bodyOverhead), 30*time.Second
	h := &bodyHandler{}
	e := NewEndpoint(h, &fakeSender{}, o, nil, m)
	s := e.out.(*fakeSender)
	now := time.Unix(1000, 0)
	e.clock, e.epoch = func() time.Time { return now }, now
	b := testBody(4096)
	mid := uint16(0)
	send := func(peer netip.AddrPort, path string, num uint32) coapmsg.Code {
		mid++
		e.HandleDatagram(peer, enc(t, blockReq(mid, path, b, num, 6)))
		code, _, _ := answer(t, s)
		return code
	}
	// Per peer: a third body of peerA replaces its first.
	send(peerA, "p/1", 0)
	send(peerA, "p/2", 0)
	send(peerA, "p/3", 0)
	if c := send(peerA, "p/1", 1); c != coapmsg.RequestEntityIncomplete {
		t.Fatalf("evicted body continued: %v", c)
	}
	if c := send(peerA, "p/2", 1); c != coapmsg.Continue {
		t.Fatalf("kept body: %v", c)
	}
	if got := testutil.ToFloat64(m.block1Out[outEvicted]); got != 1 {
		t.Fatalf("evicted %v, want 1", got)
	}
	// Memory: many peers, one body each, growing to 4 KiB: never more than BlockMaxBytes held.
	for i := range 20 {
		p := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 5683)
		for n := range uint32(3) {
			send(p, "m/x", n)
			if _, held := e.BlockBodies(); held > o.BlockMaxBytes {
				t.Fatalf("%d bytes held, cap %d", held, o.BlockMaxBytes)
			}
		}
	}
	if n, held := e.BlockBodies(); testutil.ToFloat64(m.block1Bodies) != float64(n) || testutil.ToFloat64(m.block1Bytes) != float64(held) {
		t.Fatalf("gauges %v %v, want %d %d", testutil.ToFloat64(m.block1Bodies), testutil.ToFloat64(m.block1Bytes), n, held)
	}
	// The most recent body still completes.
	if c := send(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, 19}), 5683), "m/x", 3); c != coapmsg.Changed {
		t.Fatalf("last body: %v", c)
	}
	// Idle expiry.
	now = now.Add(31 * time.Second)
	e.bodies.expireAll(e.now())
	if n, held := e.BlockBodies(); n != 0 || held != 0 || testutil.ToFloat64(m.block1Bytes) != 0 {
		t.Fatalf("after the timeout %d bodies, %d bytes", n, held)
	}
	if testutil.ToFloat64(m.block1Out[outExpired]) == 0 {
		t.Fatal("no expiry counted")
	}
}

// TestBlock2: a payload larger than the client's block size is sent block by block with Block2
// (and Size2 when asked); a block past the end gets 4.02; to an unverified peer with a small
// request the first block shrinks to keep within 3× the request, a DTLS peer gets full blocks.
func TestBlock2(t *testing.T) {
	doc := testBody(3000)
	h := HandlerFunc(func(w *ResponseWriter, r *Request) {
		w.SetUintOption(coapmsg.ContentFormat, 40)
		w.Respond(coapmsg.Content, doc)
	})
	e, s := newTestEndpoint(h, Options{BlockWise: true})
	get := func(num uint32, szx uint8, extra ...coapmsg.Option) coapmsg.Message {
		m := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.GET, MID: uint16(num + 1), Token: []byte("tokn1234"),
			Options: append([]coapmsg.Option{o(coapmsg.URIPath, "doc"), {Number: coapmsg.Block2, Value: coapmsg.AppendBlock(nil, num, false, szx)}}, extra...)}
		sortOpts(m.Options)
		return m
	}
	// The client asks for 64-byte blocks; its requests are small and its address unverified, so
	// the server may answer with smaller ones, and the client follows (RFC 7959 §2.4).
	var got []byte
	num, szx := uint32(0), uint8(2)
	for {
		req := enc(t, get(num, szx, o(coapmsg.Size2, "")))
		e.HandleDatagram(peerA, req)
		out := s.take()
		if len(out) != 1 {
			t.Fatalf("block %d: %d answers", num, len(out))
		}
		if len(out[0].b) > 3*len(req) {
			t.Fatalf("block %d: %d-byte answer to a %d-byte request", num, len(out[0].b), len(req))
		}
		m := dec(t, out[0].b)
		v, _ := m.Option(coapmsg.Block2)
		n, more, rszx, _ := coapmsg.ParseBlock(v)
		size2, _ := m.Option(coapmsg.Size2)
		if m.Code != coapmsg.Content || rszx > szx || int(n)<<(rszx+4) != int(num)<<(szx+4) || !bytes.Equal(size2, []byte{0x0b, 0xb8}) ||
			(more && len(m.Payload) != 1<<(rszx+4)) {
			t.Fatalf("block %d/%d: %v Block2 %d/%v/%d Size2 %x, %d bytes", num, szx, m.Code, n, more, rszx, size2, len(m.Payload))
		}
		got = append(got, m.Payload...)
		if !more {
			break
		}
		num, szx = n+1, rszx
	}
	if !bytes.Equal(got, doc) {
		t.Fatalf("reassembled %d bytes, want %d", len(got), len(doc))
	}
	e.HandleDatagram(peerA, enc(t, get(94, 1)))
	if code, _, m := answer(t, s); code != coapmsg.BadOption || string(m.Payload) != "block beyond the end" {
		t.Fatalf("block 94 of 32 bytes: %v %q", code, m.Payload)
	}
	// No Block2 in the request: block 0, of the largest size that keeps within 3x the request.
	plain := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.GET, MID: 99, Token: []byte{1}, Options: []coapmsg.Option{o(coapmsg.URIPath, "doc")}}
	req := enc(t, plain)
	e.HandleDatagram(peerA, req)
	out := s.take()
	m := dec(t, out[0].b)
	v, _ := m.Option(coapmsg.Block2)
	n, more, szx, _ := coapmsg.ParseBlock(v)
	if len(out[0].b) > 3*len(req) || n != 0 || !more || len(m.Payload) != 1<<(szx+4) {
		t.Fatalf("unverified peer, %d-byte request: %d-byte answer, block %d/%v/%d", len(req), len(out[0].b), n, more, 1<<(szx+4))
	}
	// Over DTLS the peer is verified: blocks of the server's size, 1024.
	e.HandleSession(peerB, peerB, "thing/t1", req)
	m = dec(t, s.take()[0].b)
	v, _ = m.Option(coapmsg.Block2)
	if n, more, szx, _ := coapmsg.ParseBlock(v); n != 0 || !more || szx != 6 || len(m.Payload) != 1024 {
		t.Fatalf("DTLS peer: block %d/%v/%d with %d bytes", n, more, szx, len(m.Payload))
	}
}

// TestNoBlock2WithoutBlockWise: without Options.BlockWise a large answer goes out whole, with no
// Block2 option (a client that never asked for block-wise transfer gets none).
func TestNoBlock2WithoutBlockWise(t *testing.T) {
	doc := testBody(3000)
	e, s := newTestEndpoint(HandlerFunc(func(w *ResponseWriter, r *Request) { w.Respond(coapmsg.Content, doc) }), Options{})
	e.HandleSession(peerB, peerB, "thing/t1", enc(t, post(coapmsg.Confirmable, 1, "")))
	m := dec(t, s.take()[0].b)
	if _, ok := m.Option(coapmsg.Block2); ok || !bytes.Equal(m.Payload, doc) {
		t.Fatalf("answer with %d bytes, options %v; want the whole document, no Block2", len(m.Payload), m.Options)
	}
}

// TestBlock1PeerKey: a body belongs to its peer: over plain CoAP its address, so a block from
// another address continues nothing (4.08); over DTLS the session, so a session whose address
// changes mid-body (a NAT rebinding, Connection ID) finishes it. NON blocks get NON answers.
func TestBlock1PeerKey(t *testing.T) {
	h := &bodyHandler{}
	e, s := newTestEndpoint(h, blockOpts1(8192))
	b := testBody(2000)
	e.HandleDatagram(peerA, enc(t, blockReq(1, "a/b", b, 0, 6)))
	e.HandleDatagram(peerB, enc(t, blockReq(2, "a/b", b, 1, 6)))
	if out := s.take(); len(out) != 2 || dec(t, out[1].b).Code != coapmsg.RequestEntityIncomplete {
		t.Fatalf("plain CoAP, block 1 from another address: %v", out)
	}
	session := netip.MustParseAddrPort("[::1]:1") // the DTLS transport's key for the session
	e.HandleSession(session, peerA, "thing/t1", enc(t, blockReq(3, "a/b", b, 0, 6)))
	e.HandleSession(session, peerB, "thing/t1", enc(t, blockReq(4, "a/b", b, 1, 6)))
	out := s.take()
	if len(out) != 2 || dec(t, out[0].b).Code != coapmsg.Continue || dec(t, out[1].b).Code != coapmsg.Changed {
		t.Fatalf("DTLS, the session's address changed between blocks: %d answers", len(out))
	}
	if len(h.bodies) != 1 || h.bodies[0] != string(b) {
		t.Fatalf("bodies %d", len(h.bodies))
	}
	non := func(m coapmsg.Message) coapmsg.Message { m.Type = coapmsg.NonConfirmable; return m }
	e.HandleDatagram(peerA, enc(t, non(blockReq(5, "a/n", b, 0, 6))))
	e.HandleDatagram(peerA, enc(t, non(blockReq(6, "a/n", b, 1, 6))))
	out = s.take()
	if len(out) != 2 || dec(t, out[0].b).Type != coapmsg.NonConfirmable || dec(t, out[0].b).Code != coapmsg.Continue || dec(t, out[1].b).Code != coapmsg.Changed {
		t.Fatalf("NON blocks: %d answers", len(out))
	}
	if len(h.bodies) != 2 || h.bodies[1] != string(b) {
		t.Fatalf("NON body: %d bodies", len(h.bodies))
	}
}
