package dtlsserver

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// tapConn is a client socket that keeps a copy of every datagram the client sends, so that a
// test can send one again (a replay) or altered.
type tapConn struct {
	*movingConn
	mu   sync.Mutex
	sent [][]byte
}

func (c *tapConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.mu.Lock()
	c.sent = append(c.sent, append([]byte(nil), b...))
	c.mu.Unlock()
	return c.movingConn.WriteTo(b, a)
}

func (c *tapConn) last() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent[len(c.sent)-1]
}

func dialTap(t *testing.T, ts *testServer) (*dtls.Conn, *tapConn) {
	t.Helper()
	tc := &tapConn{movingConn: newMovingConn(t)}
	c, err := dialOver(t, tc, ts.LocalAddr(), "sensor/dev-1", keys["sensor/dev-1"])
	if err != nil {
		t.Fatal(err)
	}
	return c, tc
}

func (ts *testServer) disposition(d string) float64 {
	return counterValue(ts.reg, "coapgw_dtls_datagrams_total", "disposition", d)
}

// TestRecordLayerDropsReplayedAndTampered: once the session is in the server's record layer, a
// record sent again (a replay) and a record with one bit flipped are dropped and counted, reach
// no handler and do not disturb the session; the client's close_notify ends it.
func TestRecordLayerDropsReplayedAndTampered(t *testing.T) {
	ts := startServer(t, Config{})
	c, tc := dialTap(t, ts)
	post(t, c, "sensor/dev-1", "one") // pion's Conn takes it, then hands the session over
	waitFor(t, "the handover", func() bool {
		ts.mu.RLock()
		ss := ts.byKey[sessionKey(1)]
		ts.mu.RUnlock()
		ss.mu.Lock()
		defer ss.mu.Unlock()
		return ss.rec != nil
	})
	post(t, c, "sensor/dev-1", "two")
	rec := tc.last()
	sock, _ := tc.current()
	srv := net.UDPAddrFromAddrPort(ts.LocalAddr())
	if _, err := sock.WriteTo(rec, srv); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replay counted", func() bool { return ts.disposition("replayed") == 1 })
	// A forgery: a sequence number far ahead (authenticated data), the rest as sent. Had it
	// moved the replay window, "three" would be refused as too old.
	tampered := append([]byte(nil), rec...)
	tampered[8] ^= 0x01
	if _, err := sock.WriteTo(tampered, srv); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the forgery counted", func() bool { return ts.disposition("unauthenticated") == 1 })
	post(t, c, "sensor/dev-1", "three")
	if got := ts.h.all(); len(got) != 3 || got[1].payload != "two" || got[2].payload != "three" {
		t.Fatalf("handler got %+v, want one, two, three once each", got)
	}

	_ = c.Close() // close_notify
	waitFor(t, "the session to end", func() bool { est, _ := ts.Sessions(); return est == 0 })
	if v := ts.disposition("closed"); v != 1 {
		t.Fatalf("closed %v, want 1", v)
	}
	if v := counterValue(ts.reg, "coapgw_dtls_session_evictions_total", "reason", evictIdle); v != 0 {
		t.Fatalf("%v evictions: the client ended it", v)
	}
}

// TestRecordLayerCarriesOn: a pion client keeps exchanging messages with the server's record
// layer after the handover, across a source port change (Connection ID) and a graceful restart,
// with one handshake: the sequence numbers continue in both directions.
func TestRecordLayerCarriesOn(t *testing.T) {
	state := t.TempDir() + "/sessions"
	ts := startServer(t, Config{StateFile: state})
	addr := ts.LocalAddr()
	c, mc, err := dial(t, addr, "sensor/dev-2", keys["sensor/dev-2"])
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := 0; i < n; i++ {
		if i == n/2 {
			mc.Move(t)
		}
		if resp := post(t, c, "sensor/dev-2", fmt.Sprint(i)); resp.Code != coapmsg.Changed {
			t.Fatalf("request %d: %v", i, resp.Code)
		}
	}
	got := ts.h.all()
	if len(got) != n || got[n-1].peer != mc.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatalf("handler got %d requests, the last from %v", len(got), got[len(got)-1].peer)
	}
	// and the handshake's third flight (the ClientHello with the cookie counts as "hello": it
	// starts the session)
	if v := ts.disposition("session"); v != n+1 {
		t.Fatalf("%v datagrams routed to the session, want %d (none dropped)", v, n+1)
	}
	ts.stop(t)
	ts2 := startServer(t, Config{Addr: addr.String(), StateFile: state})
	for i := 0; i < n; i++ {
		if resp := post(t, c, "sensor/dev-2", fmt.Sprint("after ", i)); resp.Code != coapmsg.Changed {
			t.Fatalf("after the restart, request %d: %v", i, resp.Code)
		}
	}
	if hs := ts.handshakes(resultOK) + ts2.handshakes(resultOK); hs != 1 {
		t.Fatalf("%v handshakes, want 1", hs)
	}
	if v := testutil.ToFloat64(ts2.m.restored); v != 1 {
		t.Fatalf("restored %v", v)
	}
	for _, d := range []string{"replayed", "unauthenticated", "bad_record"} {
		if v := ts2.disposition(d); v != 0 {
			t.Fatalf("%s %v after the restart", d, v)
		}
	}
}

// TestSilentSessionHandedOver: a session whose client completes the handshake and then sends
// nothing leaves pion's Conn after handoverAfter, well before HibernateAfter, without a word to
// the client; its first request is then answered by the record layer.
func TestSilentSessionHandedOver(t *testing.T) {
	saved := handoverMax
	t.Cleanup(func() { handoverMax = saved }) // after the server's cleanup (registered later)
	handoverMax = 50 * time.Millisecond
	ts := startServer(t, Config{HibernateAfter: time.Hour})
	c, _, err := dial(t, ts.LocalAddr(), "sensor/dev-1", keys["sensor/dev-1"])
	if err != nil {
		t.Fatal(err)
	}
	ts.mu.RLock()
	ss := ts.byKey[sessionKey(1)]
	ts.mu.RUnlock()
	inRecordLayer := func() bool { ss.mu.Lock(); defer ss.mu.Unlock(); return ss.rec != nil && ss.conn == nil }
	waitFor(t, "the silent session to be handed over", inRecordLayer)
	if resp := post(t, c, "sensor/dev-1", "first"); resp.Code != coapmsg.Changed {
		t.Fatalf("code %v", resp.Code)
	}
	if h := ts.hibernated.Load(); h != 0 {
		t.Fatalf("%d hibernated: HibernateAfter is an hour", h)
	}
	if got := ts.h.all(); len(got) != 1 || got[0].payload != "first" {
		t.Fatalf("handler got %+v", got)
	}
}
