package coapserver

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/prometheus/client_golang/prometheus"
)

func o(n uint16, v string) coapmsg.Option { return coapmsg.Option{Number: n, Value: []byte(v)} }

// view is what a handler can read from a Request, for comparisons.
type view struct {
	path, query    string // segments joined by "/", queries by "&"
	cf, accept     string // "" when absent
	echo           string
	block1, block2 string // "" when absent
}

func viewOf(r *Request) view {
	var v view
	var segs, qs []string
	for i := range r.NumPath() {
		segs = append(segs, string(r.Path(i)))
	}
	for i := range r.NumQuery() {
		qs = append(qs, string(r.Query(i)))
	}
	v.path, v.query = strings.Join(segs, "/"), strings.Join(qs, "&")
	if cf, ok := r.ContentFormat(); ok {
		v.cf = fmt.Sprint(cf)
	}
	if a, ok := r.Accept(); ok {
		v.accept = fmt.Sprint(a)
	}
	v.echo = string(r.Echo())
	if b, ok := r.Block1(); ok {
		v.block1 = fmt.Sprintf("%d/%v/%d", b.Num, b.More, b.Size())
	}
	if b, ok := r.Block2(); ok {
		v.block2 = fmt.Sprintf("%d/%v/%d", b.Num, b.More, b.Size())
	}
	return v
}

// TestRequestView: the view the endpoint parses for a handler, and the requests it answers itself
// because of their options: the first offending option, in option order, decides (RFC 7252
// §5.4.1, §5.4.3, §5.4.5, §5.10.2).
func TestRequestView(t *testing.T) {
	cases := []struct {
		name      string
		opts      []coapmsg.Option
		blockWise bool
		want      view
		code      coapmsg.Code // 0: handed to the handler
		num       uint16
	}{
		{"no options", nil, false, view{}, 0, 0},
		{"path and queries", []coapmsg.Option{o(3, "h"), o(7, "\x16\x33"), o(11, "a"), o(11, ""), o(11, "c"), o(15, "rt=x"), o(15, "href=/y")}, false,
			view{path: "a//c", query: "rt=x&href=/y"}, 0, 0},
		{"content-format, accept, echo", []coapmsg.Option{o(11, "a"), o(12, "\x00\x32"), o(17, "\x28"), o(252, "e1"), o(252, "e2")}, false,
			view{path: "a", cf: "50", accept: "40", echo: "e2"}, 0, 0},
		{"empty content-format is 0", []coapmsg.Option{o(12, "")}, false, view{cf: "0"}, 0, 0},
		{"long content-format ignored, the next counts", []coapmsg.Option{o(12, "\x00\x00\x32"), o(12, "\x3c")}, false, view{cf: "60"}, 0, 0},
		{"second content-format ignored", []coapmsg.Option{o(12, "\x32"), o(12, "\x3c")}, false, view{cf: "50"}, 0, 0},
		{"elective unknowns ignored", []coapmsg.Option{o(4, "etag"), o(6, ""), o(14, "\x3c"), o(60, "\x10"), o(2048, "x")}, false, view{}, 0, 0},
		{"If-Match", []coapmsg.Option{o(1, "x")}, false, view{}, coapmsg.BadOption, 1},
		{"two Uri-Host", []coapmsg.Option{o(3, "h"), o(3, "i")}, false, view{}, coapmsg.BadOption, 3},
		{"empty Uri-Host", []coapmsg.Option{o(3, "")}, false, view{}, coapmsg.BadOption, 3},
		{"256-byte Uri-Host", []coapmsg.Option{o(3, strings.Repeat("h", 256))}, false, view{}, coapmsg.BadOption, 3},
		{"two Uri-Port", []coapmsg.Option{o(7, "\x01"), o(7, "\x02")}, false, view{}, coapmsg.BadOption, 7},
		{"3-byte Uri-Port", []coapmsg.Option{o(7, "\x00\x16\x33")}, false, view{}, coapmsg.BadOption, 7},
		{"two Accept", []coapmsg.Option{o(17, "\x32"), o(17, "\x32")}, false, view{}, coapmsg.BadOption, 17},
		{"3-byte Accept", []coapmsg.Option{o(17, "\x00\x00\x32")}, false, view{}, coapmsg.BadOption, 17},
		{"Proxy-Uri", []coapmsg.Option{o(35, "coap://x/")}, false, view{}, coapmsg.ProxyingNotSupported, 35},
		{"Proxy-Scheme", []coapmsg.Option{o(39, "coap")}, false, view{}, coapmsg.ProxyingNotSupported, 39},
		{"unknown critical before Proxy-Uri", []coapmsg.Option{o(9, ""), o(35, "coap://x/")}, false, view{}, coapmsg.BadOption, 9},
		{"Proxy-Uri before unknown critical", []coapmsg.Option{o(35, "coap://x/"), o(37, "")}, false, view{}, coapmsg.ProxyingNotSupported, 35},
		{"unknown critical 65001", []coapmsg.Option{o(11, "a"), o(65001, "")}, false, view{}, coapmsg.BadOption, 65001},
		{"Block1 without block-wise", []coapmsg.Option{o(27, "\x08")}, false, view{}, coapmsg.BadOption, 27},
		{"Block2 without block-wise", []coapmsg.Option{o(23, "")}, false, view{}, coapmsg.BadOption, 23},
		{"Block2 before Proxy-Uri", []coapmsg.Option{o(23, ""), o(35, "coap://x/")}, false, view{}, coapmsg.BadOption, 23},
		{"Block1 and Block2", []coapmsg.Option{o(23, "\x02"), o(27, "\x01\x2e")}, true,
			view{block1: "18/true/1024", block2: "0/false/64"}, 0, 0},
		{"Block1 empty is block 0 of 16", []coapmsg.Option{o(27, "")}, true, view{block1: "0/false/16"}, 0, 0},
		{"Block1 3 bytes", []coapmsg.Option{o(27, "\xff\xff\xf0")}, true, view{block1: "1048575/false/16"}, 0, 0},
		{"Block1 4 bytes", []coapmsg.Option{o(27, "\x00\x00\x00\x08")}, true, view{}, coapmsg.BadOption, 27},
		{"two Block2", []coapmsg.Option{o(23, "\x02"), o(23, "\x12")}, true, view{}, coapmsg.BadOption, 23},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := enc(t, coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.GET, MID: 1, Options: c.opts})
			var m coapmsg.Message
			if err := m.Decode(b); err != nil {
				t.Fatal(err)
			}
			var r Request
			code, num := r.parse(&m, c.blockWise)
			if code != c.code || num != c.num {
				t.Fatalf("parse = %v, option %d; want %v, option %d", code, num, c.code, c.num)
			}
			if code == 0 {
				if got := viewOf(&r); got != c.want {
					t.Fatalf("view %+v, want %+v", got, c.want)
				}
			}
		})
	}
}

// viewHandler records what it saw and answers 2.05; it observes rejections.
type viewHandler struct {
	calls    int
	seen     view
	r        *Request
	rejected []coapmsg.Code
}

func (h *viewHandler) ServeCoAP(w *ResponseWriter, r *Request) {
	h.calls++
	h.seen, h.r = viewOf(r), r
	w.Respond(coapmsg.Content, nil)
}

func (h *viewHandler) Rejected(r *Request, code coapmsg.Code) { h.rejected = append(h.rejected, code) }

// TestEndpointRejectsOptions: a request the endpoint refuses for its options never reaches the
// handler: a CON gets 4.02 naming the option (5.05 for a proxy request), a NON with a bad option
// gets nothing, a NON proxy request a NON 5.05; a RejectObserver hears of each, and a duplicate
// is answered as duplicates are, without being observed again.
func TestEndpointRejectsOptions(t *testing.T) {
	h := &viewHandler{}
	reg := prometheus.NewRegistry()
	s := &fakeSender{}
	e := NewEndpoint(h, s, Options{}, nil, NewMetrics(reg))
	req := func(typ coapmsg.Type, mid uint16, opts ...coapmsg.Option) []byte {
		return enc(t, coapmsg.Message{Type: typ, Code: coapmsg.POST, MID: mid, Token: []byte("tk"), Options: opts, Payload: []byte("{}")})
	}
	// A request with a Uri-Host, so that the diagnostic does not amplify it.
	host := o(coapmsg.URIHost, "gateway.example.com")
	for _, c := range []struct {
		name string
		data []byte
		code coapmsg.Code // 0: no answer
		diag string
	}{
		{"CON option 9", req(coapmsg.Confirmable, 1, host, o(9, "x")), coapmsg.BadOption, "unsupported critical option 9"},
		{"CON Block1", req(coapmsg.Confirmable, 2, host, o(coapmsg.Block1, "\x08")), coapmsg.BadOption, "unsupported critical option 27"},
		{"NON option 9", req(coapmsg.NonConfirmable, 3, host, o(9, "x")), 0, ""},
		{"CON Proxy-Uri", req(coapmsg.Confirmable, 4, host, o(coapmsg.ProxyURI, "coap://x/")), coapmsg.ProxyingNotSupported, ""},
		{"NON Proxy-Scheme", req(coapmsg.NonConfirmable, 5, host, o(coapmsg.ProxyScheme, "coap")), coapmsg.ProxyingNotSupported, ""},
		{"CON option 9, no room for the diagnostic", req(coapmsg.Confirmable, 6, o(9, "")), coapmsg.BadOption, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			h.rejected = nil
			e.HandleDatagram(peerA, c.data)
			out := s.take()
			if h.calls != 0 {
				t.Fatal("the handler saw the request")
			}
			if len(h.rejected) != 1 || h.rejected[0] != cmp(c.code) {
				t.Fatalf("observed %v, want [%v]", h.rejected, cmp(c.code))
			}
			if c.code == 0 {
				if len(out) != 0 {
					t.Fatalf("answered a NON with a bad option: %x", out[0].b)
				}
				return
			}
			if len(out) != 1 {
				t.Fatalf("%d answers", len(out))
			}
			m := dec(t, out[0].b)
			if m.Code != c.code || string(m.Payload) != c.diag || string(m.Token) != "tk" {
				t.Fatalf("answer %v %q token %q, want %v %q", m.Code, m.Payload, m.Token, c.code, c.diag)
			}
			if len(out[0].b) > MaxAmplification*len(c.data) {
				t.Fatalf("answer of %d bytes to %d", len(out[0].b), len(c.data))
			}
			// A retransmission gets the cached answer (a CON) or nothing (a NON), and is not
			// observed again.
			e.HandleDatagram(peerA, c.data)
			again := s.take()
			if len(h.rejected) != 1 {
				t.Fatalf("duplicate observed: %v", h.rejected)
			}
			if m.Type == coapmsg.NonConfirmable {
				if len(again) != 0 {
					t.Fatal("duplicate NON answered")
				}
				return
			}
			if len(again) != 1 || !bytes.Equal(again[0].b, out[0].b) {
				t.Fatalf("duplicate CON: %d answers, want the first one again", len(again))
			}
		})
	}
	if e.Inflight() != 0 {
		t.Fatalf("inflight %d after rejections", e.Inflight())
	}
}

// cmp is the code the observer is told: 4.02 also for a NON, which gets no answer.
func cmp(c coapmsg.Code) coapmsg.Code {
	if c == 0 {
		return coapmsg.BadOption
	}
	return c
}

// TestEndpointBlockWise: with Options.BlockWise, Block1 and Block2 reach the handler parsed: a
// body in one block (Block1 0, no M) goes to the handler as it is, and its answer echoes Block1.
// (Bodies in several blocks are reassembled first: block_test.go.)
func TestEndpointBlockWise(t *testing.T) {
	h := &viewHandler{}
	e, s := newTestEndpoint(h, Options{BlockWise: true})
	m := post(coapmsg.Confirmable, 1, "")
	m.Options = append(m.Options, o(coapmsg.Block2, "\x02"), o(coapmsg.Block1, "\x06")) // after Uri-Path (11): sorted
	e.HandleDatagram(peerA, enc(t, m))
	out := s.take()
	if len(out) != 1 {
		t.Fatalf("answers %v", out)
	}
	if r := dec(t, out[0].b); r.Code != coapmsg.Content || len(r.Options) != 1 || r.Options[0].Number != coapmsg.Block1 || !bytes.Equal(r.Options[0].Value, []byte{0x06}) {
		t.Fatalf("answer %v %v, want 2.05 with Block1 0/0/1024", r.Code, r.Options)
	}
	if want := (view{path: "t/i", block1: "0/false/1024", block2: "0/false/64"}); h.calls != 1 || h.seen != want {
		t.Fatalf("handler saw %+v (%d calls), want %+v", h.seen, h.calls, want)
	}
}

// TestRequestOnlyDuringServe: the Request a handler got is cleared once ServeCoAP returned, so
// a handler that kept it cannot read a datagram the transport has reused.
func TestRequestOnlyDuringServe(t *testing.T) {
	h := &viewHandler{}
	e, _ := newTestEndpoint(h, Options{})
	e.HandleDatagram(peerA, enc(t, post(coapmsg.Confirmable, 1, "")))
	if h.seen.path != "t/i" {
		t.Fatalf("handler saw path %q", h.seen.path)
	}
	if h.r.Msg != nil || h.r.NumPath() != 0 || h.r.Peer.IsValid() {
		t.Fatalf("request still readable after ServeCoAP: %+v", *h.r)
	}
}

// typicalPOST is what a device sends: CON POST /sensor/dev-1, a 4-byte token, Content-Format
// JSON, a small JSON object.
func typicalPOST(mid uint16) coapmsg.Message {
	return coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: mid, Token: []byte{1, 2, 3, 4},
		Options: []coapmsg.Option{o(coapmsg.URIHost, "gw.example.com"), o(coapmsg.URIPath, "sensor"), o(coapmsg.URIPath, "dev-1"),
			o(coapmsg.ContentFormat, "\x32"), o(coapmsg.URIQuery, "q=1"), o(coapmsg.Echo, "echo")},
		Payload: []byte(`{"temperature":21.5}`)}
}

// TestRequestViewNoAlloc: parsing the view allocates nothing, and a request answered at once
// costs the endpoint one allocation, the ResponseWriter (which holds the Request).
func TestRequestViewNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	var m coapmsg.Message
	if err := m.Decode(enc(t, typicalPOST(1))); err != nil {
		t.Fatal(err)
	}
	var r Request
	if n := testing.AllocsPerRun(1000, func() {
		if code, _ := r.parse(&m, true); code != 0 {
			panic(code)
		}
	}); n != 0 {
		t.Fatalf("parse: %v allocs, want 0", n)
	}
	if viewOf(&r) != (view{path: "sensor/dev-1", query: "q=1", cf: "50", echo: "echo"}) {
		t.Fatalf("view %+v", viewOf(&r))
	}

	h := HandlerFunc(func(w *ResponseWriter, r *Request) {
		if r.NumPath() != 2 || len(r.Path(1)) != 5 || len(r.Echo()) != 4 {
			panic("bad view")
		}
		w.Respond(coapmsg.Changed, nil)
	})
	e := NewEndpoint(h, discard{}, Options{DedupPerPeerCap: 64}, nil, nil)
	reqs := make([][]byte, 256)
	for i := range reqs {
		reqs[i] = enc(t, typicalPOST(uint16(i)))
	}
	i := 0
	step := func() { e.HandleDatagram(peerA, reqs[i%len(reqs)]); i++ }
	for range 2 * len(reqs) { // past the per-peer cap: dedup entries are evicted and reused
		step()
	}
	if n := testing.AllocsPerRun(1000, step); n > 1 {
		t.Fatalf("HandleDatagram: %v allocs per request, want at most 1 (the ResponseWriter)", n)
	}
}
