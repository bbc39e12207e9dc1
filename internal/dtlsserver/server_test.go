package dtlsserver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// keys is the test's credential store: identity → PSK.
var keys = map[string][]byte{
	"sensor/dev-1": []byte("secretPSK-dev-1!"),
	"sensor/dev-2": []byte("secretPSK-dev-2!"),
}

func lookup(id []byte) ([]byte, error) {
	if k, ok := keys[string(id)]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("unknown identity %q", id)
}

// seen is what the handler got: one entry per request.
type seen struct {
	mu   sync.Mutex
	reqs []seenReq
}

type seenReq struct {
	identity, path, payload string
	peer                    netip.AddrPort
}

func (s *seen) ServeCoAP(w *coapserver.ResponseWriter, r *coapserver.Request) {
	var segs []string
	for i := 0; i < r.NumPath(); i++ {
		segs = append(segs, string(r.Path(i)))
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, seenReq{identity: r.Identity, path: strings.Join(segs, "/"), payload: string(r.Payload()), peer: r.Peer})
	s.mu.Unlock()
	w.Respond(coapmsg.Changed, nil)
}

func (s *seen) all() []seenReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seenReq(nil), s.reqs...)
}

type testServer struct {
	*Server
	h    *seen
	reg  *prometheus.Registry
	done chan error
}

func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.PSK == nil {
		cfg.PSK = lookup
	}
	ts := &testServer{h: &seen{}, reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	s, err := New(cfg, ts.h, coapserver.Options{}, nil, ts.reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ts.Server = s
	go func() { ts.done <- s.Serve(context.Background()) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop shuts the server down (saving sessions if it has a StateFile); idempotent.
func (ts *testServer) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Error(err)
	}
	select {
	case err := <-ts.done:
		if err != nil {
			t.Error(err)
		}
		ts.done <- nil
	case <-time.After(5 * time.Second):
		t.Error("Serve did not return")
	}
}

func (ts *testServer) handshakes(result string) float64 {
	return counterValue(ts.reg, "coapgw_dtls_handshakes_total", "result", result)
}

func counterValue(reg *prometheus.Registry, name, label, value string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					if m.Counter != nil {
						return m.GetCounter().GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}

// movingConn is a client socket that can change its source port mid-session, as a NAT
// rebinding does.
type movingConn struct {
	mu     sync.Mutex
	cur    *net.UDPConn
	rdl    time.Time
	closed bool
}

func newMovingConn(t *testing.T) *movingConn {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return &movingConn{cur: c}
}

func (m *movingConn) current() (*net.UDPConn, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur, m.closed
}

// Move continues on a new socket (a new source port) and closes the old one.
func (m *movingConn) Move(t *testing.T) netip.AddrPort {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	old := m.cur
	m.cur = c
	_ = c.SetReadDeadline(m.rdl)
	m.mu.Unlock()
	old.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (m *movingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c, _ := m.current()
		n, a, err := c.ReadFrom(b)
		if now, closed := m.current(); err != nil && now != c && !closed {
			continue
		}
		return n, a, err
	}
}

func (m *movingConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c, _ := m.current()
	return c.WriteTo(b, a)
}

func (m *movingConn) Close() error {
	m.mu.Lock()
	m.closed = true
	c := m.cur
	m.mu.Unlock()
	return c.Close()
}

func (m *movingConn) LocalAddr() net.Addr { c, _ := m.current(); return c.LocalAddr() }
func (m *movingConn) SetDeadline(t time.Time) error {
	return m.SetReadDeadline(t)
}
func (m *movingConn) SetReadDeadline(t time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rdl = t
	return m.cur.SetReadDeadline(t)
}
func (m *movingConn) SetWriteDeadline(time.Time) error { return nil }

// dial makes a pion client session with identity and key, asking for a Connection ID.
func dial(t *testing.T, server netip.AddrPort, identity string, key []byte) (*dtls.Conn, *movingConn, error) {
	t.Helper()
	mc := newMovingConn(t)
	c, err := dialOver(t, mc, server, identity, key)
	if err != nil {
		return nil, nil, err
	}
	return c, mc, nil
}

// dialOver is dial over the client socket pc (closed with the session).
func dialOver(t *testing.T, pc net.PacketConn, server netip.AddrPort, identity string, key []byte) (*dtls.Conn, error) {
	t.Helper()
	c, err := dtls.ClientWithOptions(pc, net.UDPAddrFromAddrPort(server),
		dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		dtls.WithPSKIdentityHint([]byte(identity)),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
		dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
	)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

var mid atomic.Uint32

// post sends a CON POST to path over c and returns the response.
func post(t *testing.T, c *dtls.Conn, path, payload string) *coapmsg.Message {
	t.Helper()
	m := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: uint16(mid.Add(1)), Token: []byte{1, 2, 3, 4}, Payload: []byte(payload)}
	for _, seg := range strings.Split(path, "/") {
		m.Options = append(m.Options, coapmsg.Option{Number: coapmsg.URIPath, Value: []byte(seg)})
	}
	b, err := m.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	var resp coapmsg.Message
	if err := resp.Decode(buf[:n]); err != nil {
		t.Fatal(err)
	}
	if resp.MID != m.MID || resp.Type != coapmsg.Acknowledgement {
		t.Fatalf("response %v MID %d, want piggybacked ACK for MID %d", resp.Type, resp.MID, m.MID)
	}
	return &resp
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPOSTCarriesIdentity(t *testing.T) {
	ts := startServer(t, Config{})
	c, mc, err := dial(t, ts.LocalAddr(), "sensor/dev-1", keys["sensor/dev-1"])
	if err != nil {
		t.Fatal(err)
	}
	resp := post(t, c, "sensor/dev-1", `{"t":1}`)
	if resp.Code != coapmsg.Changed {
		t.Fatalf("code %v, want 2.04", resp.Code)
	}
	got := ts.h.all()
	if len(got) != 1 {
		t.Fatalf("handler got %d requests, want 1", len(got))
	}
	want := seenReq{identity: "sensor/dev-1", path: "sensor/dev-1", payload: `{"t":1}`, peer: mc.LocalAddr().(*net.UDPAddr).AddrPort()}
	if got[0] != want {
		t.Fatalf("handler got %+v, want %+v", got[0], want)
	}
	if est, _ := ts.Sessions(); est != 1 || ts.handshakes(resultOK) != 1 {
		t.Fatalf("sessions %d, handshakes ok %v; want 1, 1", est, ts.handshakes(resultOK))
	}
}

func TestWrongKeyFailsHandshake(t *testing.T) {
	ts := startServer(t, Config{HandshakeTimeout: time.Second})
	for _, tc := range []struct{ name, identity string }{
		{"wrong key", "sensor/dev-1"},
		{"unknown identity", "sensor/nobody"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := dial(t, ts.LocalAddr(), tc.identity, []byte("not the right key")); err == nil {
				t.Fatal("handshake succeeded with a wrong key")
			}
		})
	}
	// An unknown identity fails at once; a wrong key leaves the client's Finished undecryptable,
	// which DTLS discards silently, so that handshake ends at HandshakeTimeout.
	waitFor(t, "failed handshakes counted", func() bool { return ts.handshakes(resultFailed)+ts.handshakes(resultTimeout) == 2 })
	if n := len(ts.h.all()); n != 0 {
		t.Fatalf("handler got %d requests", n)
	}
	if est, hs := ts.Sessions(); est != 0 || hs != 0 {
		t.Fatalf("sessions %d established, %d handshaking; want none", est, hs)
	}
}

func TestConnectionIDSurvivesPortChange(t *testing.T) {
	ts := startServer(t, Config{})
	c, mc, err := dial(t, ts.LocalAddr(), "sensor/dev-2", keys["sensor/dev-2"])
	if err != nil {
		t.Fatal(err)
	}
	if resp := post(t, c, "sensor/dev-2", "a"); resp.Code != coapmsg.Changed {
		t.Fatalf("code %v", resp.Code)
	}
	moved := mc.Move(t)
	if resp := post(t, c, "sensor/dev-2", "b"); resp.Code != coapmsg.Changed {
		t.Fatalf("after the port change: code %v", resp.Code)
	}
	// The session follows the device from the first record pion authenticates at its new
	// address: that request shows it, and its answer goes there.
	if resp := post(t, c, "sensor/dev-2", "c"); resp.Code != coapmsg.Changed {
		t.Fatalf("after the port change: code %v", resp.Code)
	}
	got := ts.h.all()
	if len(got) != 3 || got[1].peer != moved || got[2].peer != moved || got[1].identity != "sensor/dev-2" || got[1].payload != "b" || got[2].identity != "sensor/dev-2" {
		t.Fatalf("handler got %+v; want the later requests as sensor/dev-2, the last from %v", got, moved)
	}
	if hs := ts.handshakes(resultOK); hs != 1 {
		t.Fatalf("%v handshakes, want 1 (no new handshake after the port change)", hs)
	}
	if est, _ := ts.Sessions(); est != 1 {
		t.Fatalf("%d sessions, want 1", est)
	}
}

func TestRestartKeepsSessions(t *testing.T) {
	state := t.TempDir() + "/dtls-sessions.json"
	ts := startServer(t, Config{StateFile: state})
	addr := ts.LocalAddr()
	c, _, err := dial(t, addr, "sensor/dev-1", keys["sensor/dev-1"])
	if err != nil {
		t.Fatal(err)
	}
	post(t, c, "sensor/dev-1", "before")
	ts.stop(t)
	if got := testutil.ToFloat64(ts.m.saved); got != 1 {
		t.Fatalf("saved %v sessions, want 1", got)
	}

	ts2 := startServer(t, Config{Addr: addr.String(), StateFile: state})
	if resp := post(t, c, "sensor/dev-1", "after"); resp.Code != coapmsg.Changed {
		t.Fatalf("after restart: code %v", resp.Code)
	}
	got := ts2.h.all()
	if len(got) != 1 || got[0].identity != "sensor/dev-1" || got[0].payload != "after" {
		t.Fatalf("new server's handler got %+v", got)
	}
	if hs := ts2.handshakes(resultOK); hs != 0 {
		t.Fatalf("new server made %v handshakes, want 0", hs)
	}
	if v := testutil.ToFloat64(ts2.m.restored); v != 1 {
		t.Fatalf("restored %v sessions, want 1", v)
	}

	// The state file is used once: a third server starts without sessions.
	ts2.stop(t)
	ts3 := startServer(t, Config{Addr: addr.String()})
	_ = ts3
	if est, _ := ts3.Sessions(); est != 0 {
		t.Fatalf("third server has %d sessions", est)
	}
}

func TestIdleSessionsExpire(t *testing.T) {
	ts := startServer(t, Config{IdleTimeout: 200 * time.Millisecond})
	c, _, err := dial(t, ts.LocalAddr(), "sensor/dev-1", keys["sensor/dev-1"])
	if err != nil {
		t.Fatal(err)
	}
	post(t, c, "sensor/dev-1", "x")
	waitFor(t, "the idle session to be evicted", func() bool {
		est, _ := ts.Sessions()
		return est == 0
	})
	if v := counterValue(ts.reg, "coapgw_dtls_session_evictions_total", "reason", evictIdle); v != 1 {
		t.Fatalf("idle evictions %v, want 1", v)
	}
}

func TestMaxSessionsEvictsLeastRecent(t *testing.T) {
	ts := startServer(t, Config{MaxSessions: 2})
	var conns []*dtls.Conn
	for i := 0; i < 3; i++ {
		c, _, err := dial(t, ts.LocalAddr(), "sensor/dev-1", keys["sensor/dev-1"])
		if err != nil {
			t.Fatal(err)
		}
		post(t, c, "sensor/dev-1", "x")
		conns = append(conns, c)
		time.Sleep(2 * time.Millisecond) // distinct last-activity times
	}
	waitFor(t, "the cap to hold", func() bool { est, _ := ts.Sessions(); return est == 2 })
	if v := counterValue(ts.reg, "coapgw_dtls_session_evictions_total", "reason", evictCap); v != 1 {
		t.Fatalf("cap evictions %v, want 1", v)
	}
	post(t, conns[2], "sensor/dev-1", "newest still works")
}

// clientHello captures the first datagram a pion client sends: a ClientHello without cookie.
func clientHello(t testing.TB) []byte {
	t.Helper()
	a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dtls.ClientWithOptions(b, a.LocalAddr(),
		dtls.WithPSK(func([]byte) ([]byte, error) { return []byte("k"), nil }),
		dtls.WithPSKIdentityHint([]byte("sensor/dev-1")),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.HandshakeContext(ctx) }()
	buf := make([]byte, 2048)
	_ = a.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := a.ReadFrom(buf)
	cancel()
	c.Close()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if !isClientHello(buf[:n]) {
		t.Fatalf("captured datagram is no ClientHello: % x", buf[:min(n, 16)])
	}
	return buf[:n]
}

func TestValidate(t *testing.T) {
	err := (Config{MaxSessions: -1, MaxDatagram: 100}).Validate()
	for _, want := range []string{"empty listen address", "no PSK", "negative max sessions", "below 256"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
	if err := (Config{Addr: ":5684", PSK: lookup}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestSessionKeyIsStableAndDistinct(t *testing.T) {
	a, b := sessionKey(1), sessionKey(2)
	if a == b || a != sessionKey(1) || !netip.MustParsePrefix("100::/64").Contains(a.Addr()) {
		t.Fatalf("keys %v %v", a, b)
	}
}

func TestHibernatedSessionWakes(t *testing.T) {
	ts := startServer(t, Config{HibernateAfter: 50 * time.Millisecond})
	c, mc, err := dial(t, ts.LocalAddr(), "sensor/dev-1", keys["sensor/dev-1"])
	if err != nil {
		t.Fatal(err)
	}
	post(t, c, "sensor/dev-1", "awake")
	for round := 1; round <= 3; round++ {
		waitFor(t, "the session to hibernate", func() bool { return ts.hibernated.Load() == 1 })
		if round == 3 {
			mc.Move(t) // a hibernated session follows its Connection ID too
		}
		if resp := post(t, c, "sensor/dev-1", fmt.Sprint("woken ", round)); resp.Code != coapmsg.Changed {
			t.Fatalf("round %d: code %v", round, resp.Code)
		}
		if w := testutil.ToFloat64(ts.m.wakes); w != float64(round) {
			t.Fatalf("round %d: %v wakes", round, w)
		}
	}
	got := ts.h.all()
	if len(got) != 4 || got[3].identity != "sensor/dev-1" || got[3].payload != "woken 3" {
		t.Fatalf("handler got %+v", got)
	}
	if hs := ts.handshakes(resultOK); hs != 1 {
		t.Fatalf("%v handshakes, want 1", hs)
	}
}

// TestLateResponseWakesSession: a response the handler sends after the session hibernated
// wakes it and reaches the client (as a separate CON response after the empty ACK).
func TestLateResponseWakesSession(t *testing.T) {
	release := make(chan struct{})
	h := coapserver.HandlerFunc(func(w *coapserver.ResponseWriter, r *coapserver.Request) {
		w.Defer()
		go func() { <-release; w.Respond(coapmsg.Changed, []byte("late")) }()
	})
	s, err := New(Config{Addr: "127.0.0.1:0", PSK: lookup, HibernateAfter: 50 * time.Millisecond}, h, coapserver.Options{PiggybackDeadline: 20 * time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, h: &seen{}, reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(context.Background()) }()
	t.Cleanup(func() { ts.stop(t) })

	c, _, err := dial(t, s.LocalAddr(), "sensor/dev-1", keys["sensor/dev-1"])
	if err != nil {
		t.Fatal(err)
	}
	req := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: 7, Token: []byte{9}}
	b, _ := req.Append(nil)
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var m coapmsg.Message
	if err := m.Decode(buf[:n]); err != nil || m.Type != coapmsg.Acknowledgement || m.Code != coapmsg.Empty {
		t.Fatalf("got %+v (%v), want the empty ACK", m, err)
	}
	waitFor(t, "the session to hibernate", func() bool { return s.hibernated.Load() == 1 })
	close(release)
	n, err = c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Decode(buf[:n]); err != nil || m.Type != coapmsg.Confirmable || m.Code != coapmsg.Changed || string(m.Payload) != "late" {
		t.Fatalf("got %+v (%v), want the separate 2.04", m, err)
	}
}

// TestSpoofedHelloKeepsSession: a ClientHello from the address of an established session
// without Connection ID (as a spoofer could send) gets a HelloVerifyRequest; returning the
// cookie (as an on-path spoofer could) starts a handshake there, but when that handshake is
// abandoned the address routes to the established session again.
func TestSpoofedHelloKeepsSession(t *testing.T) {
	ts := startServer(t, Config{HandshakeTimeout: 300 * time.Millisecond})
	mc := newMovingConn(t)
	c, err := dtls.ClientWithOptions(mc, net.UDPAddrFromAddrPort(ts.LocalAddr()),
		dtls.WithPSK(func([]byte) ([]byte, error) { return keys["sensor/dev-1"], nil }),
		dtls.WithPSKIdentityHint([]byte("sensor/dev-1")),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_GCM_SHA256), // and no Connection ID
	)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	post(t, c, "sensor/dev-1", "before")

	// Without the cookie a ClientHello gets a HelloVerifyRequest and starts nothing; with the
	// cookie (a spoofer that sees the HelloVerifyRequest) it starts a handshake.
	sock, _ := mc.current()
	hello := clientHello(t)
	verifies := func() float64 {
		return counterValue(ts.reg, "coapgw_dtls_datagrams_total", "disposition", "hello_verify")
	}
	before := verifies() // the client's own cookie exchange (its ClientHello may have been retransmitted)
	if _, err := sock.WriteTo(hello, net.UDPAddrFromAddrPort(ts.LocalAddr())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the HelloVerifyRequest", func() bool { return verifies() == before+1 })
	if _, hs := ts.Sessions(); hs != 0 {
		t.Fatalf("%d handshakes started by a ClientHello without cookie", hs)
	}
	from := sock.LocalAddr().(*net.UDPAddr).AddrPort()
	second := withCookie(t, hello, cookieFor(t, ts.cookies, hello, from), 1, 1)
	if _, err := sock.WriteTo(second, net.UDPAddrFromAddrPort(ts.LocalAddr())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the spoofed handshake to start and expire", func() bool {
		return ts.handshakes(resultTimeout) == 1
	})
	if resp := post(t, c, "sensor/dev-1", "after"); resp.Code != coapmsg.Changed {
		t.Fatalf("code %v", resp.Code)
	}
	if est, hs := ts.Sessions(); est != 1 || hs != 0 {
		t.Fatalf("%d sessions, %d handshakes", est, hs)
	}
}

// TestStateFile: the saved sessions are readable by the owner only, and a state file that does
// not decode is reported and removed without stopping the server.
func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	state := dir + "/sessions.json"
	ts := startServer(t, Config{StateFile: state})
	c, _, err := dial(t, ts.LocalAddr(), "sensor/dev-1", keys["sensor/dev-1"])
	if err != nil {
		t.Fatal(err)
	}
	post(t, c, "sensor/dev-1", "x")
	ts.stop(t)
	fi, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("%d files in the state directory, want only the state file", len(ents))
	}

	if err := os.WriteFile(state, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts2 := startServer(t, Config{StateFile: state})
	if est, _ := ts2.Sessions(); est != 0 {
		t.Fatalf("%d sessions from a corrupt file", est)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatalf("corrupt state file still there: %v", err)
	}
	c2, _, err := dial(t, ts2.LocalAddr(), "sensor/dev-2", keys["sensor/dev-2"])
	if err != nil {
		t.Fatal(err)
	}
	post(t, c2, "sensor/dev-2", "works")
}

func TestHibernatedSessionsExpire(t *testing.T) {
	ts := startServer(t, Config{HibernateAfter: 20 * time.Millisecond, IdleTimeout: 300 * time.Millisecond})
	c, _, err := dial(t, ts.LocalAddr(), "sensor/dev-1", keys["sensor/dev-1"])
	if err != nil {
		t.Fatal(err)
	}
	post(t, c, "sensor/dev-1", "x")
	waitFor(t, "the session to hibernate", func() bool { return ts.hibernated.Load() == 1 })
	waitFor(t, "the hibernated session to expire", func() bool { est, _ := ts.Sessions(); return est == 0 })
	if h := ts.hibernated.Load(); h != 0 {
		t.Fatalf("%d hibernated sessions after expiry", h)
	}
	if v := counterValue(ts.reg, "coapgw_dtls_session_evictions_total", "reason", evictIdle); v != 1 {
		t.Fatalf("idle evictions %v, want 1", v)
	}
	// Its Connection ID is forgotten: the client's next record finds no session.
	b, _ := (&coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: 1}).Append(nil)
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the record to be dropped as unknown_cid", func() bool {
		return counterValue(ts.reg, "coapgw_dtls_datagrams_total", "disposition", "unknown_cid") == 1
	})
}

// TestOversizedDatagramDropped: a datagram longer than MaxDatagram is dropped whole (counted),
// and the session it belonged to goes on.
func TestOversizedDatagramDropped(t *testing.T) {
	ts := startServer(t, Config{MaxDatagram: 512})
	c, _, err := dial(t, ts.LocalAddr(), "sensor/dev-1", keys["sensor/dev-1"])
	if err != nil {
		t.Fatal(err)
	}
	big := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: 999, Token: []byte{7}, Payload: make([]byte, 700)}
	b, _ := big.Append(nil)
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the oversized datagram counted", func() bool {
		return counterValue(ts.reg, "coapgw_dtls_datagrams_total", "disposition", "oversized") == 1
	})
	if resp := post(t, c, "sensor/dev-1", "small"); resp.Code != coapmsg.Changed {
		t.Fatalf("code %v", resp.Code)
	}
	if got := ts.h.all(); len(got) != 1 || got[0].payload != "small" {
		t.Fatalf("handler got %+v", got)
	}
}

// TestConcurrentClients runs clients in parallel while sessions hibernate and wake between
// requests and some clients change port: every request is answered 2.04 and reaches the
// handler once, with its identity.
func TestConcurrentClients(t *testing.T) {
	const clients, requests = 12, 15
	ts := startServer(t, Config{HibernateAfter: 5 * time.Millisecond})
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		id := "sensor/dev-1"
		if i%2 == 1 {
			id = "sensor/dev-2"
		}
		c, mc, err := dial(t, ts.LocalAddr(), id, keys[id])
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < requests; r++ {
				if i%3 == 0 && r == requests/2 {
					mc.Move(t)
				}
				time.Sleep(time.Duration(r%4) * 4 * time.Millisecond)
				m := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: uint16(mid.Add(1)), Token: []byte{byte(i), byte(r)}, Payload: []byte(id)}
				b, _ := m.Append(nil)
				// A CoAP client: the CON goes again (same MID) when no answer came, as a
				// device's would (RFC 7252 §4.2, with shorter waits). A datagram can be lost
				// while a session hibernates or wakes; the exchange layer's dedup must still
				// hand each request to the handler once. Answers to an earlier MID (a late
				// original after its retransmission was answered) are skipped.
				var resp coapmsg.Message
				answered := false
				for try := 0; try < 5 && !answered; try++ {
					if _, err := c.Write(b); err != nil {
						errs <- err
						return
					}
					deadline := time.Now().Add(time.Second)
					for !answered {
						_ = c.SetReadDeadline(deadline)
						buf := make([]byte, 512)
						n, err := c.Read(buf)
						if err != nil {
							break // retransmit
						}
						if err := resp.Decode(buf[:n]); err != nil {
							errs <- fmt.Errorf("client %d request %d: %v", i, r, err)
							return
						}
						answered = resp.MID == m.MID
					}
				}
				if !answered || resp.Code != coapmsg.Changed {
					errs <- fmt.Errorf("client %d request %d: no 2.04 after 5 tries: %+v", i, r, resp)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := ts.h.all()
	if len(got) != clients*requests {
		t.Fatalf("handler got %d requests, want %d", len(got), clients*requests)
	}
	for _, r := range got {
		if r.identity != r.payload {
			t.Fatalf("request %+v carries the wrong identity", r)
		}
	}
	if hs := ts.handshakes(resultOK); hs != clients {
		t.Fatalf("%v handshakes, want %d", hs, clients)
	}
	if testutil.ToFloat64(ts.m.wakes) == 0 {
		t.Fatal("no session hibernated and woke: the test did not test that")
	}
}
