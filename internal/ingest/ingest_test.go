package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
)

// fakeSpool stores appends in memory and answers synchronously with err.
type fakeSpool struct {
	mu   sync.Mutex
	data [][]byte
	err  error // returned from Append
	fail error // passed to done
	// slow, if set, makes the durable write asynchronous: it completes when a value is sent on
	// slow (nil: stored, else: failed with that error), like a slow fsync.
	slow chan error
	// stats, if set, is what Stats reports.
	stats func() spool.Stats
}

func (f *fakeSpool) Append(b []byte, done func(uint64, error)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if f.fail != nil {
		done(0, f.fail)
		return nil
	}
	if f.slow != nil {
		b := append([]byte(nil), b...) // the caller reuses its buffer
		go func(slow chan error) {
			err := <-slow
			var seq uint64
			if err == nil {
				f.mu.Lock()
				f.data = append(f.data, b)
				seq = uint64(len(f.data))
				f.mu.Unlock()
			}
			done(seq, err)
		}(f.slow)
		return nil
	}
	f.data = append(f.data, append([]byte(nil), b...))
	done(uint64(len(f.data)), nil)
	return nil
}

// stored is the number of records stored.
func (f *fakeSpool) stored() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.data)
}

func (f *fakeSpool) Stats() spool.Stats {
	if f.stats != nil {
		return f.stats()
	}
	return spool.Stats{Depth: int64(f.stored())}
}

type capture struct {
	mu  sync.Mutex
	out [][]byte
}

func (c *capture) Send(_ netip.AddrPort, b []byte) {
	c.mu.Lock()
	c.out = append(c.out, append([]byte(nil), b...))
	c.mu.Unlock()
}

type rig struct {
	t   *testing.T
	sp  *fakeSpool
	h   *Handler
	ep  *coapserver.Endpoint
	cap *capture
	mid uint16
}

func newRig(t *testing.T) *rig {
	return newRigWith(t, Config{GatewayID: "gw-test", Version: "v-test"})
}

func newRigWith(t *testing.T, cfg Config) *rig {
	return newRigOpts(t, cfg, coapserver.Options{})
}

// newRigOpts is newRigWith with exchange-layer options. If they set a PiggybackDeadline, the
// endpoint's timers (empty ACKs, separate responses) run until the test ends.
func newRigOpts(t *testing.T, cfg Config, opts coapserver.Options) *rig {
	return newRigSpoolOpts(t, cfg, &fakeSpool{}, opts)
}

// newRigSpool is newRigWith over the spool sp.
func newRigSpool(t *testing.T, cfg Config, sp *fakeSpool) *rig {
	return newRigSpoolOpts(t, cfg, sp, coapserver.Options{})
}

func newRigSpoolOpts(t *testing.T, cfg Config, sp *fakeSpool, opts coapserver.Options) *rig {
	h, err := New(cfg, sp, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &capture{}
	ep := coapserver.NewEndpoint(h, c, opts, nil, nil)
	if opts.PiggybackDeadline > 0 {
		ep.Start()
		t.Cleanup(ep.Stop)
	}
	return &rig{t: t, sp: sp, h: h, cap: c, ep: ep}
}

var peer = netip.MustParseAddrPort("127.0.0.1:40000")

func opt(n uint16, v string) coapmsg.Option { return coapmsg.Option{Number: n, Value: []byte(v)} }

func pathOpts(segs ...string) []coapmsg.Option {
	var o []coapmsg.Option
	for _, s := range segs {
		o = append(o, opt(coapmsg.URIPath, s))
	}
	return o
}

// do sends one CON request and returns the single response.
func (r *rig) do(code coapmsg.Code, opts []coapmsg.Option, payload string) *coapmsg.Message {
	r.t.Helper()
	_, out := r.send(coapmsg.Confirmable, code, []byte{1, 2}, opts, payload)
	if len(out) != 1 {
		r.t.Fatalf("%d responses, want 1", len(out))
	}
	var resp coapmsg.Message
	if err := resp.Decode(out[0]); err != nil {
		r.t.Fatal(err)
	}
	if resp.MID != r.mid || !bytes.Equal(resp.Token, []byte{1, 2}) {
		r.t.Fatalf("response MID/token %d %x do not echo the request", resp.MID, resp.Token)
	}
	return &resp
}

// send sends one request of type typ with the next MID and returns the datagram and every
// datagram sent back while it was handled.
func (r *rig) send(typ coapmsg.Type, code coapmsg.Code, token []byte, opts []coapmsg.Option, payload string) ([]byte, [][]byte) {
	r.t.Helper()
	r.mid++
	for i := 1; i < len(opts); i++ {
		for j := i; j > 0 && opts[j].Number < opts[j-1].Number; j-- {
			opts[j], opts[j-1] = opts[j-1], opts[j]
		}
	}
	m := coapmsg.Message{Type: typ, Code: code, MID: r.mid, Token: token, Options: opts, Payload: []byte(payload)}
	b, err := m.Append(nil)
	if err != nil {
		r.t.Fatal(err)
	}
	return b, r.raw(b)
}

// raw hands datagram b to the endpoint and returns every datagram sent back while it was handled.
func (r *rig) raw(b []byte) [][]byte {
	r.ep.HandleDatagram(peer, b)
	return r.take()
}

// take returns and forgets the datagrams sent so far.
func (r *rig) take() [][]byte {
	r.cap.mu.Lock()
	defer r.cap.mu.Unlock()
	out := r.cap.out
	r.cap.out = nil
	return out
}

func cf(n byte) coapmsg.Option {
	return coapmsg.Option{Number: coapmsg.ContentFormat, Value: []byte{n}}
}

func TestTelemetryAccepted(t *testing.T) {
	r := newRig(t)
	for _, method := range []coapmsg.Code{coapmsg.POST, coapmsg.PUT} {
		resp := r.do(method, append(pathOpts("sensor", "dev-1"), cf(50)), `{"temp":21.5}`)
		if resp.Code != coapmsg.Changed {
			t.Fatalf("%v: code %v payload %q", method, resp.Code, resp.Payload)
		}
	}
	// Content-Format absent is JSON too.
	if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-2"), `{"a":[1,2,{"b":null}]}`); resp.Code != coapmsg.Changed {
		t.Fatalf("no content-format: %v %q", resp.Code, resp.Payload)
	}
	if len(r.sp.data) != 3 {
		t.Fatalf("%d records spooled, want 3", len(r.sp.data))
	}
	var rec record.Record
	if err := record.Decode(r.sp.data[0], &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Type != "sensor" || rec.ID != "dev-1" || rec.GW != "gw-test" || string(rec.Payload) != `{"temp":21.5}` ||
		rec.ContentFormat != 50 || rec.Peer != peer.String() || rec.ReceivedAt.IsZero() {
		t.Fatalf("record %+v", rec)
	}
	if err := record.Decode(r.sp.data[2], &rec); err != nil || rec.ContentFormat != record.NoContentFormat {
		t.Fatalf("absent content-format recorded as %d (%v)", rec.ContentFormat, err)
	}
}

func TestRejectedBeforeSpooling(t *testing.T) {
	long := strings.Repeat("a", 129)
	deep := strings.Repeat(`{"a":`, 7) + "1" + strings.Repeat("}", 7)
	ok6 := strings.Repeat(`{"a":`, 6) + "1" + strings.Repeat("}", 6)
	cases := []struct {
		name    string
		code    coapmsg.Code
		opts    []coapmsg.Option
		payload string
		want    coapmsg.Code
	}{
		{"dot segment", coapmsg.POST, pathOpts(".", "x"), `{}`, coapmsg.BadRequest},
		{"dotdot", coapmsg.POST, pathOpts("a", ".."), `{}`, coapmsg.BadRequest},
		{"empty segment", coapmsg.POST, pathOpts("a", ""), `{}`, coapmsg.BadRequest},
		{"slash inside", coapmsg.POST, pathOpts("a/b", "c"), `{}`, coapmsg.BadRequest},
		{"NUL inside", coapmsg.POST, pathOpts("a\x00", "c"), `{}`, coapmsg.BadRequest},
		{"non-UTF-8", coapmsg.POST, pathOpts("a\xff", "c"), `{}`, coapmsg.BadRequest},
		{"129-byte name", coapmsg.POST, pathOpts("a", long), `{}`, coapmsg.BadRequest},
		{"255-byte segment", coapmsg.POST, pathOpts(strings.Repeat("b", 255), "c"), `{}`, coapmsg.BadRequest},
		{"plus", coapmsg.POST, pathOpts("a+", "c"), `{}`, coapmsg.BadRequest},
		{"hash", coapmsg.POST, pathOpts("a", "#"), `{}`, coapmsg.BadRequest},
		{"$aws", coapmsg.POST, pathOpts("$aws", "things"), `{}`, coapmsg.BadRequest},
		{"one segment", coapmsg.POST, pathOpts("a"), `{}`, coapmsg.BadRequest},
		{"three segments", coapmsg.POST, pathOpts("a", "b", "c"), `{}`, coapmsg.BadRequest},
		{"40 segments", coapmsg.POST, pathOpts(strings.Split(strings.Repeat("x/", 40)[:79], "/")...), `{}`, coapmsg.BadRequest},
		{"unsupported content-format", coapmsg.POST, append(pathOpts("a", "b"), cf(41)), `{}`, coapmsg.UnsupportedFormat},
		{"CBOR that is JSON text", coapmsg.POST, append(pathOpts("a", "b"), cf(60)), `{}`, coapmsg.BadRequest},
		{"text/plain", coapmsg.POST, append(pathOpts("a", "b"), cf(0)), `{}`, coapmsg.UnsupportedFormat},
		{"CBOR byte string", coapmsg.POST, append(pathOpts("a", "b"), cf(60)), "\xa1\x61\x61\x41\x00", coapmsg.BadRequest},
		{"CBOR NUL in a string", coapmsg.POST, append(pathOpts("a", "b"), cf(60)), "\xa1\x61\x61\x61\x00", coapmsg.BadRequest},
		{"CBOR empty key", coapmsg.POST, append(pathOpts("a", "b"), cf(60)), "\xa1\x60\x01", coapmsg.BadRequest},
		{"CBOR duplicate key", coapmsg.POST, append(pathOpts("a", "b"), cf(60)), "\xa2\x61\x61\x01\x61\x61\x02", coapmsg.BadRequest},
		{"SenML without a value", coapmsg.POST, append(pathOpts("a", "b"), cf(110)), `[{"n":"a"}]`, coapmsg.BadRequest},
		{"SenML NUL in a string", coapmsg.POST, append(pathOpts("a", "b"), cf(110)), `[{"n":"a","vs":"\u0000"}]`, coapmsg.BadRequest},
		{"SenML CBOR that is JSON", coapmsg.POST, append(pathOpts("a", "b"), cf(112)), `[{"n":"a","v":1}]`, coapmsg.BadRequest},
		{"invalid JSON", coapmsg.POST, pathOpts("a", "b"), `{"a":`, coapmsg.BadRequest},
		{"JSON lying as 50", coapmsg.POST, append(pathOpts("a", "b"), cf(50)), "\x01\x02", coapmsg.BadRequest},
		{"invalid UTF-8 in string", coapmsg.POST, pathOpts("a", "b"), "{\"a\":\"\xff\"}", coapmsg.BadRequest},
		{"nested 7", coapmsg.POST, pathOpts("a", "b"), deep, coapmsg.BadRequest},
		{"array", coapmsg.POST, pathOpts("a", "b"), `[1,2]`, coapmsg.BadRequest},
		{"scalar", coapmsg.POST, pathOpts("a", "b"), `42`, coapmsg.BadRequest},
		{"empty payload", coapmsg.POST, pathOpts("a", "b"), ``, coapmsg.BadRequest},
		{"trailing garbage", coapmsg.POST, pathOpts("a", "b"), `{} x`, coapmsg.BadRequest},
		{"unknown critical option", coapmsg.POST, append(pathOpts("a", "b"), opt(9, "x")), `{}`, coapmsg.BadOption},
		{"Block1 (critical, unsupported)", coapmsg.POST, append(pathOpts("a", "b"), opt(coapmsg.Block1, "\x08")), `{}`, coapmsg.BadOption},
		{"two Uri-Host", coapmsg.POST, append(pathOpts("a", "b"), opt(3, "h"), opt(3, "i")), `{}`, coapmsg.BadOption},
		{"Uri-Port too long", coapmsg.POST, append(pathOpts("a", "b"), opt(7, "123")), `{}`, coapmsg.BadOption},
		{"Accept too long", coapmsg.POST, append(pathOpts("a", "b"), opt(17, "123")), `{}`, coapmsg.BadOption},
		{"Proxy-Uri", coapmsg.POST, append(pathOpts("a", "b"), opt(35, "coap://x/")), `{}`, coapmsg.ProxyingNotSupported},
		{"GET a thing", coapmsg.GET, pathOpts("a", "b"), ``, coapmsg.MethodNotAllowed},
		{"DELETE a thing", coapmsg.DELETE, pathOpts("a", "b"), ``, coapmsg.MethodNotAllowed},
		{"GET unknown", coapmsg.GET, pathOpts("nope"), ``, coapmsg.NotFound},
		{"POST health", coapmsg.POST, pathOpts("health"), `{}`, coapmsg.MethodNotAllowed},
		{"PUT well-known", coapmsg.PUT, pathOpts(".well-known", "core"), `{}`, coapmsg.MethodNotAllowed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			resp := r.do(c.code, c.opts, c.payload)
			if resp.Code != c.want {
				t.Fatalf("code %v (%q), want %v", resp.Code, resp.Payload, c.want)
			}
			if len(r.sp.data) != 0 {
				t.Fatalf("spooled %d records for a rejected request", len(r.sp.data))
			}
			if c.want == coapmsg.BadRequest && len(resp.Payload) == 0 {
				// Dropped only because it would amplify a tiny request: with a request of a
				// realistic size (a Uri-Host, as clients send for a host name) it is there.
				host := opt(coapmsg.URIHost, "coapgw.example.com")
				if resp := r.do(c.code, append(slices.Clone(c.opts), host), c.payload); len(resp.Payload) == 0 {
					t.Fatal("4.00 without a diagnostic payload")
				}
			}
		})
	}
	r := newRig(t)
	if resp := r.do(coapmsg.POST, pathOpts("a", "b"), ok6); resp.Code != coapmsg.Changed {
		t.Fatalf("6 levels: %v %q", resp.Code, resp.Payload)
	}
	// Unknown elective options are ignored; a repeated Content-Format is treated as unrecognized
	// (elective: ignored), so the first one counts.
	if resp := r.do(coapmsg.POST, append(pathOpts("a", "b"), opt(2048, "x"), cf(50), cf(60)), `{}`); resp.Code != coapmsg.Changed {
		t.Fatalf("elective options: %v %q", resp.Code, resp.Payload)
	}
}

func TestTooLarge(t *testing.T) {
	r := newRig(t)
	big := `{"a":"` + strings.Repeat("x", 9000) + `"}`
	resp := r.do(coapmsg.POST, pathOpts("a", "b"), big)
	if resp.Code != coapmsg.RequestEntityTooLarge {
		t.Fatalf("code %v", resp.Code)
	}
	v, ok := resp.Option(coapmsg.Size1)
	if n, _ := coapmsg.Uint(v); !ok || n != 8192 {
		t.Fatalf("Size1 = %v (%v), want 8192", n, ok)
	}
	if len(r.sp.data) != 0 {
		t.Fatal("oversized payload spooled")
	}
}

func TestSpoolFailuresGet503(t *testing.T) {
	for _, c := range []struct {
		name      string
		err, fail error
		diag      string
	}{
		{"full", spool.ErrFull, nil, "spool full"},
		{"closed", spool.ErrClosed, nil, "storage unavailable"},
		{"fsync failed", nil, fmt.Errorf("fsync: %w", errors.New("EIO")), "storage unavailable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			r.sp.err, r.sp.fail = c.err, c.fail
			resp := r.do(coapmsg.POST, pathOpts("a", "b"), `{}`)
			if resp.Code != coapmsg.ServiceUnavailable {
				t.Fatalf("code %v, want 5.03", resp.Code)
			}
			if v, ok := resp.Option(coapmsg.MaxAge); !ok || len(v) == 0 {
				t.Fatal("5.03 without Max-Age")
			}
			if string(resp.Payload) != c.diag {
				t.Fatalf("diagnostic %q, want %q", resp.Payload, c.diag)
			}
		})
	}
	r := newRig(t)
	r.h.Drain()
	if resp := r.do(coapmsg.POST, pathOpts("a", "b"), `{}`); resp.Code != coapmsg.ServiceUnavailable || len(r.sp.data) != 0 ||
		string(resp.Payload) != "gateway shutting down" {
		t.Fatalf("draining: code %v %q, %d spooled", resp.Code, resp.Payload, len(r.sp.data))
	}
}

func TestHealth(t *testing.T) {
	r := newRigWith(t, Config{GatewayID: "gw-test", Version: "v-test", Lag: func() time.Duration { return 250 * time.Millisecond }})
	r.do(coapmsg.POST, pathOpts("a", "b"), `{}`)
	// The answer is more than three times the request: an Echo round trip first (amplification.go).
	resp := r.do(coapmsg.GET, pathOpts("health"), "")
	echo, ok := resp.Option(coapmsg.Echo)
	if resp.Code != coapmsg.Unauthorized || !ok {
		t.Fatalf("health without Echo: %v", resp.Code)
	}
	resp = r.do(coapmsg.GET, append(pathOpts("health"), opt(coapmsg.Echo, string(echo))), "")
	if resp.Code != coapmsg.Content || string(resp.Payload) != `{"status":"ok","spool_depth":1,"lag_seconds":0.250,"version":"v-test"}` {
		t.Fatalf("health: %v %s", resp.Code, resp.Payload)
	}
	if v, _ := resp.Option(coapmsg.ContentFormat); len(v) != 1 || v[0] != 50 {
		t.Fatalf("health content-format %v", v)
	}
}

func TestWellKnownCore(t *testing.T) {
	r := newRig(t)
	r.do(coapmsg.POST, pathOpts("secret-type", "secret-id"), `{}`)
	cases := []struct {
		queries []string
		code    coapmsg.Code
		body    string
	}{
		{nil, coapmsg.Content, `</health>;rt="coapgw.health";ct=50`},
		{[]string{"rt=coapgw.health"}, coapmsg.Content, `</health>;rt="coapgw.health";ct=50`},
		{[]string{"rt=coapgw.*"}, coapmsg.Content, `</health>;rt="coapgw.health";ct=50`},
		{[]string{"href=/health"}, coapmsg.Content, `</health>;rt="coapgw.health";ct=50`},
		{[]string{"href=/h*"}, coapmsg.Content, `</health>;rt="coapgw.health";ct=50`},
		{[]string{"ct=50"}, coapmsg.Content, `</health>;rt="coapgw.health";ct=50`},
		{[]string{"rt=other"}, coapmsg.NotFound, ``},
		{[]string{"href=/x*"}, coapmsg.NotFound, ``},
		{[]string{"rt=coapgw.health", "href=/nope"}, coapmsg.NotFound, ``},
	}
	for _, c := range cases {
		opts := pathOpts(".well-known", "core")
		for _, q := range c.queries {
			opts = append(opts, opt(coapmsg.URIQuery, q))
		}
		resp := r.do(coapmsg.GET, opts, "")
		if resp.Code != c.code || string(resp.Payload) != c.body {
			t.Fatalf("%v: %v %q, want %v %q", c.queries, resp.Code, resp.Payload, c.code, c.body)
		}
		if c.code == coapmsg.Content {
			if v, _ := resp.Option(coapmsg.ContentFormat); len(v) != 1 || v[0] != 40 {
				t.Fatalf("ct = %v, want 40", v)
			}
		}
		if strings.Contains(string(resp.Payload), "secret") {
			t.Fatal("well-known/core leaks device names")
		}
	}
}

func TestJSONCheck(t *testing.T) {
	good := []string{`{}`, ` {"a":1} `, `{"a":-0.5e+10,"b":"\u00e9\n","c":[true,false,null],"d":{}}`, `{"ü":"✓"}`}
	bad := []string{``, `{`, `{"a"}`, `{"a":01}`, `{"a":1,}`, `{"a":"\x"}`, `{"a":"` + "\x01" + `"}`, `{"a":tru}`, `{} {}`, `{"a":1.}`, `{"a":"\ud800`}
	for _, g := range good {
		if err := checkJSONObject([]byte(g), 6); err != nil {
			t.Errorf("%q: %v", g, err)
		}
	}
	for _, b := range bad {
		if err := checkJSONObject([]byte(b), 6); err == nil {
			t.Errorf("%q accepted", b)
		}
	}
}

func FuzzCheckJSONObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":[1,{"b":null}]}`, `[1]`, `{"a":"\ud83d\ude00"}`, "{\"a\":\"\xff\"}", strings.Repeat("[", 50),
		`{"a":1e400}`, `{"a":1,"\u0061":2}`, `{"":1}`, `{"a":"\u0000"}`, `{"a":"\ud800\u0041"}`, `{"a":{"b":1,"b":2}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := checkJSONObject(b, 6)
		if err == nil {
			// Whatever we accept, encoding/json must accept as an object too.
			var v map[string]any
			if jerr := jsonUnmarshal(b, &v); jerr != nil {
				t.Fatalf("accepted %q that encoding/json rejects: %v", b, jerr)
			}
			// And the processor must decode it: a record the device API acknowledges is never
			// set aside as undecodable.
			if _, derr := processor.DecodeJSON(b, 1); derr != nil {
				t.Fatalf("accepted %q that the processor cannot decode: %v", b, derr)
			}
		}
	})
}

func BenchmarkServeCoAP(b *testing.B) { benchServeCoAP(b, Config{GatewayID: "gw"}) }

// benchServeCoAP posts telemetry for sensor/dev-1 to a handler with cfg.
func benchServeCoAP(b *testing.B, cfg Config) { benchServeCoAPWith(b, cfg) }

// benchServeCoAPWith is benchServeCoAP with extra request options.
func benchServeCoAPWith(b *testing.B, cfg Config, extra ...coapmsg.Option) {
	benchServeCoAPFormat(b, cfg, record.FormatJSON, benchPayloads[record.FormatJSON], extra...)
}

// benchPayloads are one reading in each format: the same JSON form.
var benchPayloads = map[uint16][]byte{
	record.FormatJSON:      []byte(`{"temp":21.5,"hum":40,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxx"}`),
	record.FormatCBOR:      []byte("\xa3\x64temp\xf9\x4d\x60\x63hum\x18\x28\x63pad\x78\x1axxxxxxxxxxxxxxxxxxxxxxxxxx"),
	record.FormatSenMLJSON: []byte(`[{"n":"temp","v":21.5},{"n":"hum","v":40},{"n":"pad","vs":"xxxxxxxxxxxxxxxxxxxxxxxxxx"}]`),
	record.FormatSenMLCBOR: []byte("\x83\xa2\x00\x64temp\x02\xf9\x4d\x60\xa2\x00\x63hum\x02\x18\x28\xa2\x00\x63pad\x03\x78\x1axxxxxxxxxxxxxxxxxxxxxxxxxx"),
}

// BenchmarkServeCoAPFormats is BenchmarkServeCoAP with the same reading in each format, side by
// side: the figure is each format's ns/op against json's.
func BenchmarkServeCoAPFormats(b *testing.B) {
	for _, f := range []struct {
		name string
		cf   uint16
	}{{"json", record.FormatJSON}, {"cbor", record.FormatCBOR}, {"senml-json", record.FormatSenMLJSON}, {"senml-cbor", record.FormatSenMLCBOR}} {
		b.Run(f.name, func(b *testing.B) {
			b.ReportMetric(float64(len(benchPayloads[f.cf])), "payload-bytes")
			benchServeCoAPFormat(b, Config{GatewayID: "gw"}, f.cf, benchPayloads[f.cf])
		})
	}
}

func benchServeCoAPFormat(b *testing.B, cfg Config, format uint16, payload []byte, extra ...coapmsg.Option) {
	sp := &fakeSpool{}
	h, err := New(cfg, sp, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	ep := coapserver.NewEndpoint(h, discard{}, coapserver.Options{}, nil, nil)
	m := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, Token: []byte{1, 2, 3, 4},
		Options: append(append(pathOpts("sensor", "dev-1"), cf(byte(format))), extra...), Payload: payload}
	reqs := make([][]byte, 4096)
	for i := range reqs {
		m.MID = uint16(i)
		reqs[i], _ = m.Append(nil)
	}
	b.ReportAllocs()
	cpu0 := processCPU()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%4096 == 0 {
			sp.data = sp.data[:0]
		}
		p := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 20), byte(i >> 12)}), 5683)
		ep.HandleDatagram(p, reqs[i%4096])
		if cfg.Registry != nil { // the processor keeps up
			h.Processed(uint64(len(sp.data)))
		}
	}
	b.StopTimer()
	// CPU time of the process (every thread: GC included) per request: unlike ns/op, it does not
	// grow when other processes take the machine's cores.
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// processCPU is the process's user and system CPU time in nanoseconds.
func processCPU() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

type discard struct{}

func (discard) Send(netip.AddrPort, []byte) {}
