package dtlsserver

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"
	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/protocol"
	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/protocol/handshake"
	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/protocol/recordlayer"
)

// withCookie returns the ClientHello datagram hello with its cookie replaced by cookie, its
// message_seq by msgSeq and its record sequence number by recSeq: the second ClientHello a
// client sends after a HelloVerifyRequest.
func withCookie(t testing.TB, hello, cookie []byte, msgSeq uint16, recSeq uint64) []byte {
	t.Helper()
	h, ok := parseClientHello(hello)
	if !ok {
		t.Fatalf("not a ClientHello: % x", hello)
	}
	bodyStart := recordlayer.FixedHeaderSize + handshake.HeaderLength
	bodyLen := int(binary.BigEndian.Uint32(hello[recordlayer.FixedHeaderSize:]) & 0xffffff)
	body := hello[bodyStart : bodyStart+bodyLen]
	rest := body[len(h.prefix)+1+len(h.cookie):]
	nb := append(append(append(append([]byte(nil), h.prefix...), byte(len(cookie))), cookie...), rest...)
	hs := handshake.Header{Type: handshake.TypeClientHello, Length: uint32(len(nb)), MessageSequence: msgSeq, FragmentLength: uint32(len(nb))}
	hsRaw, _ := hs.Marshal()
	rec := recordlayer.Header{ContentType: protocol.ContentTypeHandshake, Version: protocol.Version1_2, SequenceNumber: recSeq,
		ContentLen: uint16(len(hsRaw) + len(nb))}
	out, _ := rec.Marshal()
	return append(append(out, hsRaw...), nb...)
}

// readHVR parses b as a HelloVerifyRequest record and returns it with its record header.
func readHVR(t testing.TB, b []byte) (recordlayer.Header, handshake.Header, []byte) {
	t.Helper()
	var r recordlayer.RecordLayer
	if err := r.Unmarshal(b); err != nil {
		t.Fatalf("not a record: %v: % x", err, b)
	}
	hs, ok := r.Content.(*handshake.Handshake)
	if !ok {
		t.Fatalf("not a handshake record: % x", b)
	}
	hvr, ok := hs.Message.(*handshake.MessageHelloVerifyRequest)
	if !ok {
		t.Fatalf("not a HelloVerifyRequest: %T", hs.Message)
	}
	return r.Header, hs.Header, hvr.Cookie
}

// cookieFor is the cookie j gives hello from addr, read from its HelloVerifyRequest.
func cookieFor(t testing.TB, j *cookieJar, hello []byte, addr netip.AddrPort) []byte {
	t.Helper()
	h, _ := parseClientHello(hello)
	_, _, c := readHVR(t, j.appendHelloVerifyRequest(nil, &h, addr))
	return c
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestParseClientHello(t *testing.T) {
	hello := clientHello(t)
	h, ok := parseClientHello(hello)
	if !ok || h.messageSeq != 0 || h.recordSeq != 0 || len(h.cookie) != 0 || len(h.prefix) != 2+32+1 || len(h.suites) < 5 {
		t.Fatalf("pion's first ClientHello: %v %+v", ok, h)
	}
	second := withCookie(t, hello, []byte("0123456789abcdef"), 1, 0x0102_0304_0506)
	h, ok = parseClientHello(second)
	if !ok || h.messageSeq != 1 || h.recordSeq != 0x0102_0304_0506 || string(h.cookie) != "0123456789abcdef" {
		t.Fatalf("second ClientHello: %v %+v", ok, h)
	}
	// Pion reads it as the same ClientHello with the cookie.
	var m handshake.MessageClientHello
	if err := m.Unmarshal(second[recordlayer.FixedHeaderSize+handshake.HeaderLength:]); err != nil || string(m.Cookie) != "0123456789abcdef" {
		t.Fatalf("pion reads %v, cookie %q", err, m.Cookie)
	}

	fragmented := bytes.Clone(hello)
	fragmented[recordlayer.FixedHeaderSize+11]-- // fragment_length one short of length
	for name, b := range map[string][]byte{
		"fragmented": fragmented,
		"cut short":  hello[:len(hello)-1],
		"epoch 1":    append(append([]byte{}, hello[:3]...), append([]byte{0, 1}, hello[5:]...)...),
		"no record":  hello[:recordlayer.FixedHeaderSize],
		"not DTLS":   append([]byte{22, 3, 3}, hello[3:]...),
	} {
		if _, ok := parseClientHello(b); ok {
			t.Errorf("%s: read as a ClientHello", name)
		}
	}
}

// TestCookie: a cookie is valid for the ClientHello and the address it was made for, under the
// current or the previous secret; not for another address or port, a changed random or cipher
// suite list, after two rotations, or forged.
func TestCookie(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	j := newCookieJar(clock.now)
	hello := clientHello(t)
	addr := netip.MustParseAddrPort("192.0.2.1:5683")
	cookie := cookieFor(t, j, hello, addr)
	if len(cookie) != cookieLen {
		t.Fatalf("cookie of %d bytes", len(cookie))
	}
	valid := func(b []byte, from netip.AddrPort) bool {
		h, ok := parseClientHello(b)
		return ok && j.valid(&h, from)
	}
	second := withCookie(t, hello, cookie, 1, 1)
	if !valid(second, addr) {
		t.Fatal("the cookie is not valid for its own ClientHello")
	}
	changed := func(i int) []byte { // the second ClientHello with byte i of its body changed
		b := bytes.Clone(second)
		b[recordlayer.FixedHeaderSize+handshake.HeaderLength+i] ^= 1
		return b
	}
	suites := 2 + 32 + 1 + 1 + cookieLen + 2 // the first cipher suite
	for name, tc := range map[string]struct {
		b    []byte
		from netip.AddrPort
	}{
		"other address":     {second, netip.MustParseAddrPort("192.0.2.2:5683")},
		"other port":        {second, netip.MustParseAddrPort("192.0.2.1:5684")},
		"other random":      {changed(5), addr},
		"other suite":       {changed(suites), addr},
		"forged":            {withCookie(t, hello, bytes.Repeat([]byte{7}, cookieLen), 1, 1), addr},
		"truncated cookie":  {withCookie(t, hello, cookie[:cookieLen-1], 1, 1), addr},
		"no cookie at all":  {hello, addr},
		"cookie one longer": {withCookie(t, hello, append(bytes.Clone(cookie), 0), 1, 1), addr},
	} {
		if valid(tc.b, tc.from) {
			t.Errorf("%s: accepted", name)
		}
	}
	clock.add(cookieRotation + time.Second)
	if !valid(second, addr) {
		t.Fatal("the previous secret's cookie is refused after one rotation")
	}
	if fresh := cookieFor(t, j, hello, addr); bytes.Equal(fresh, cookie) {
		t.Fatal("the secret did not rotate")
	}
	clock.add(cookieRotation + time.Second)
	if valid(second, addr) {
		t.Fatal("a cookie two rotations old is accepted")
	}
}

// TestHelloVerifyRequest: the answer is the record pion's RecordLayer.Marshal makes for a
// HelloVerifyRequest with the cookie, the ClientHello's record sequence number and message_seq
// (RFC 6347 §4.2.1); it is shorter than the ClientHello, and the reader makes and sends it
// without allocating.
func TestHelloVerifyRequest(t *testing.T) {
	j := newCookieJar(time.Now)
	hello := withCookie(t, clientHello(t), nil, 1, 0x0102_0304_0506)
	h, _ := parseClientHello(hello)
	b := j.appendHelloVerifyRequest(nil, &h, netip.MustParseAddrPort("192.0.2.1:5683"))
	rec, hs, cookie := readHVR(t, b)
	if rec.SequenceNumber != 0x0102_0304_0506 || rec.Epoch != 0 || hs.MessageSequence != 1 || len(cookie) != cookieLen ||
		len(b) != hvrLen || len(b) >= len(hello) {
		t.Fatalf("record seq %d epoch %d, message_seq %d, cookie %d bytes, %d bytes for a %d-byte ClientHello",
			rec.SequenceNumber, rec.Epoch, hs.MessageSequence, len(cookie), len(b), len(hello))
	}
	want, err := (&recordlayer.RecordLayer{
		Header: recordlayer.Header{Version: protocol.Version1_2, SequenceNumber: 0x0102_0304_0506},
		Content: &handshake.Handshake{
			Header:  handshake.Header{MessageSequence: 1},
			Message: &handshake.MessageHelloVerifyRequest{Version: protocol.Version1_2, Cookie: cookie},
		},
	}).Marshal()
	if err != nil || !bytes.Equal(b, want) {
		t.Fatalf("made  % x\npion  % x (%v)", b, want, err)
	}

	ts := startServer(t, Config{})
	from := netip.MustParseAddrPort("127.0.0.9:40000")
	if n := testing.AllocsPerRun(1000, func() { ts.route(hello, from, time.Now().UnixNano()) }); n != 0 {
		t.Fatalf("%v allocations per ClientHello answered", n)
	}
}

// floodSource is a socket on a loopback address of its own, as a spoofed source.
func floodSource(t *testing.T, i int) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 3+byte(i>>16), byte(i>>8), byte(i))})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestClientHelloFlood sends ClientHellos from 2,000 source addresses: every one gets a
// HelloVerifyRequest and none creates anything (no handshake in progress, no goroutine), and a
// real client completes its handshake while the flood goes on. ClientHellos returning a forged
// cookie, another address's, or one two secrets old create nothing either: they are answered
// with a new HelloVerifyRequest.
func TestClientHelloFlood(t *testing.T) {
	const sources, batch = 2000, 200
	ts := startServer(t, Config{MaxHandshakes: 64, HandshakeTimeout: 300 * time.Millisecond})
	clock := &fakeClock{t: time.Now()}
	ts.cookies.mu.Lock()
	ts.cookies.now = clock.now
	ts.cookies.mu.Unlock()
	hello := clientHello(t)
	srv := net.UDPAddrFromAddrPort(ts.LocalAddr())
	disp := func(d string) float64 { return counterValue(ts.reg, "coapgw_dtls_datagrams_total", "disposition", d) }
	goroutines := handshakeGoroutines()
	buf := make([]byte, 2048)
	for first := 0; first < sources; first += batch {
		socks := make([]*net.UDPConn, batch)
		for i := range socks {
			socks[i] = floodSource(t, first+i)
			if _, err := socks[i].WriteTo(hello, srv); err != nil {
				t.Fatal(err)
			}
		}
		for i, s := range socks {
			_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := s.Read(buf)
			if err != nil {
				t.Fatalf("source %d: no HelloVerifyRequest: %v", first+i, err)
			}
			if rec, _, cookie := readHVR(t, buf[:n]); rec.SequenceNumber != 0 || len(cookie) != cookieLen {
				t.Fatalf("source %d: record seq %d, cookie % x", first+i, rec.SequenceNumber, cookie)
			}
			s.Close()
		}
		if est, hs := ts.Sessions(); est != 0 || hs != 0 {
			t.Fatalf("after %d ClientHellos: %d sessions, %d handshakes in progress", first+batch, est, hs)
		}
		waitFor(t, "no handshake goroutine more than before the flood", func() bool { return handshakeGoroutines() <= goroutines })
	}
	if v := disp("hello_verify"); v != sources {
		t.Fatalf("%v ClientHellos answered with a HelloVerifyRequest, want %d", v, sources)
	}

	// Second ClientHellos that must not pass: each gets a HelloVerifyRequest, nothing more.
	a, b := floodSource(t, sources), floodSource(t, sources+1)
	defer a.Close()
	defer b.Close()
	cookieA := cookieFor(t, ts.cookies, hello, a.LocalAddr().(*net.UDPAddr).AddrPort())
	bad := []struct {
		name string
		from *net.UDPConn
		b    []byte
	}{
		{"forged", a, withCookie(t, hello, bytes.Repeat([]byte{0x5a}, cookieLen), 1, 1)},
		{"another address's", b, withCookie(t, hello, cookieA, 1, 1)},
	}
	check := func(name string, from *net.UDPConn, b []byte, badBefore float64) {
		t.Helper()
		started := disp("hello")
		if _, err := from.WriteTo(b, srv); err != nil {
			t.Fatal(err)
		}
		_ = from.SetReadDeadline(time.Now().Add(5 * time.Second))
		for { // past the flight of an earlier handshake from there
			n, err := from.Read(buf)
			if err != nil {
				t.Fatalf("%s cookie: no HelloVerifyRequest: %v", name, err)
			}
			if n > handshakeTypeIndex && buf[handshakeTypeIndex] == byte(handshake.TypeHelloVerifyRequest) {
				readHVR(t, buf[:n])
				break
			}
		}
		if v := disp("bad_cookie"); v != badBefore+1 {
			t.Fatalf("%s cookie: bad_cookie %v, want %v", name, v, badBefore+1)
		}
		if est, hs := ts.Sessions(); est != 0 || hs != 0 || disp("hello") != started {
			t.Fatalf("%s cookie: %d sessions, %d handshakes in progress", name, est, hs)
		}
	}
	for i, c := range bad {
		check(c.name, c.from, c.b, float64(i))
	}
	clock.add(cookieRotation + time.Second) // the previous secret's cookie still passes...
	if _, err := a.WriteTo(withCookie(t, hello, cookieA, 1, 1), srv); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the handshake of a cookie one secret old to start and expire", func() bool {
		return disp("hello") == 1 && ts.handshakes(resultTimeout) == 1
	})
	clock.add(cookieRotation + time.Second) // ...and not after the next rotation
	check("stale", a, withCookie(t, hello, cookieA, 1, 2), float64(len(bad)))

	// A real client gets in during a flood.
	var stop atomic.Bool
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; !stop.Load(); i++ {
			s := floodSource(t, sources+2+i%5000)
			if _, err := s.WriteTo(hello, srv); err == nil {
				sent.Add(1)
			}
			s.Close()
		}
	})
	waitFor(t, "the flood to start", func() bool { return sent.Load() > 100 })
	c, _, err := dial(t, ts.LocalAddr(), "sensor/dev-1", keys["sensor/dev-1"])
	if err != nil {
		stop.Store(true)
		wg.Wait()
		t.Fatalf("handshake during the flood: %v", err)
	}
	post(t, c, "sensor/dev-1", "during the flood")
	stop.Store(true)
	wg.Wait()
	if est, hs := ts.Sessions(); est != 1 || hs != 0 || ts.handshakes(resultOK) != 1 || disp("hello") != 2 {
		t.Fatalf("%d sessions, %d handshakes in progress, %v ok, %v started", est, hs, ts.handshakes(resultOK), disp("hello"))
	}
	t.Logf("%d more ClientHellos during the real handshake", sent.Load())
}

// TestSpoofedSourcesKeepNoState routes ClientHellos from 100,000 spoofed addresses and ports
// (straight to the router, as the reader would): the heap stays flat and nothing per peer
// remains (with per-peer Conns before the cookie, 1,024 handshakes in progress would hold
// ~24 MB and 4,096 goroutines).
func TestSpoofedSourcesKeepNoState(t *testing.T) {
	sources := 100_000
	if testing.Short() {
		sources = 10_000
	}
	ts := startServer(t, Config{})
	hello := clientHello(t)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	goroutines, before := handshakeGoroutines(), heap()
	for i := range sources {
		ts.route(hello, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 4 + byte(i>>16), byte(i >> 8), byte(i)}), 1024+uint16(i%60000)), time.Now().UnixNano())
	}
	after := heap()
	v := counterValue(ts.reg, "coapgw_dtls_datagrams_total", "disposition", "hello_verify")
	est, hs := ts.Sessions()
	t.Logf("%d ClientHellos: heap %d → %d bytes, %d → %d handshake goroutines", sources, before, after, goroutines, handshakeGoroutines())
	if v != float64(sources) || est != 0 || hs != 0 {
		t.Fatalf("%v answered, %d sessions, %d handshakes in progress", v, est, hs)
	}
	if after > before+1<<20 {
		t.Fatalf("heap grew by %d bytes", after-before)
	}
	// Polled: a goroutine of the runtime or of an earlier test may be ending.
	waitFor(t, "no handshake goroutine more than before", func() bool { return handshakeGoroutines() <= goroutines })
}

// TestHandshakeAfterStatelessCookie: pion clients with each cipher suite, with and without a
// Connection ID, complete the handshake through the stateless cookie exchange, also when the
// server's first flight (ServerHello) is lost: the client retransmits its second ClientHello
// and the handshake in progress answers it.
func TestHandshakeAfterStatelessCookie(t *testing.T) {
	ts := startServer(t, Config{})
	for _, tc := range []struct {
		name  string
		suite dtls.CipherSuiteID
		cid   bool
		lose  bool
	}{
		{"CCM_8 with CID", dtls.TLS_PSK_WITH_AES_128_CCM_8, true, false},
		{"GCM without CID", dtls.TLS_PSK_WITH_AES_128_GCM_SHA256, false, false},
		{"ServerHello lost", dtls.TLS_PSK_WITH_AES_128_CCM_8, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			lc := &losingConn{UDPConn: sock, lose: tc.lose}
			opts := []dtls.ClientOption{
				dtls.WithPSK(func([]byte) ([]byte, error) { return keys["sensor/dev-1"], nil }),
				dtls.WithPSKIdentityHint([]byte("sensor/dev-1")),
				dtls.WithCipherSuites(tc.suite),
				dtls.WithFlightInterval(100 * time.Millisecond),
			}
			if tc.cid {
				opts = append(opts, dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()))
			}
			c, err := dtls.ClientWithOptions(lc, net.UDPAddrFromAddrPort(ts.LocalAddr()), opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := c.HandshakeContext(ctx); err != nil {
				t.Fatal(err)
			}
			post(t, c, "sensor/dev-1", tc.name)
			if tc.lose && lc.lost.Load() != 1 {
				t.Fatalf("%d ServerHellos lost", lc.lost.Load())
			}
		})
	}
}

// losingConn drops the first datagram starting with a ServerHello, if lose.
type losingConn struct {
	*net.UDPConn
	lose bool
	lost atomic.Int32
}

func (l *losingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := l.UDPConn.ReadFrom(b)
		if err == nil && l.lose && n > handshakeTypeIndex && b[0] == contentHandshake && b[handshakeTypeIndex] == handshakeServerHello &&
			l.lost.CompareAndSwap(0, 1) {
			continue
		}
		return n, a, err
	}
}

// FuzzClientHello: whatever the reader reads as a ClientHello gets a HelloVerifyRequest no
// longer than itself, whose cookie, returned in the ClientHello, is valid from that address
// only.
func FuzzClientHello(f *testing.F) {
	hello := clientHello(f)
	f.Add(hello)
	f.Add(withCookie(f, hello, bytes.Repeat([]byte{1}, cookieLen), 1, 1))
	f.Add(withCookie(f, hello, bytes.Repeat([]byte{1}, 255), 3, 1<<40))
	j := newCookieJar(time.Now)
	addr := netip.MustParseAddrPort("192.0.2.1:5683")
	other := netip.MustParseAddrPort("192.0.2.1:5682")
	f.Fuzz(func(t *testing.T, data []byte) {
		h, ok := parseClientHello(data)
		if !ok {
			return
		}
		if j.valid(&h, addr) {
			t.Fatalf("a cookie the jar did not make is valid: % x", h.cookie)
		}
		b := j.appendHelloVerifyRequest(nil, &h, addr)
		rec, hs, cookie := readHVR(t, b)
		if len(b) > len(data) || rec.SequenceNumber != h.recordSeq || hs.MessageSequence != h.messageSeq {
			t.Fatalf("%d-byte answer to %d bytes, record seq %d (%d), message_seq %d (%d)",
				len(b), len(data), rec.SequenceNumber, h.recordSeq, hs.MessageSequence, h.messageSeq)
		}
		second := withCookie(t, data, cookie, h.messageSeq+1, h.recordSeq+1)
		h2, ok := parseClientHello(second)
		if !ok || !j.valid(&h2, addr) || j.valid(&h2, other) {
			t.Fatalf("the cookie returned: read %v, valid from its address %v, from another %v", ok, ok && j.valid(&h2, addr), ok && j.valid(&h2, other))
		}
	})
}

// handshakeGoroutines counts the goroutines a handshake in progress runs: the session's
// (runSession) and pion's for its Conn. Counting these rather than runtime.NumGoroutine keeps
// a flood test from seeing goroutines of earlier tests (timers, closing sockets) come and go.
func handshakeGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("github.com/pion/dtls")) || bytes.Contains(g, []byte("dtlsserver.(*Server).runSession")) {
			count++
		}
	}
	return count
}
