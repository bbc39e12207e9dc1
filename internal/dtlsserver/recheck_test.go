package dtlsserver

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// fakeKeys is a PSK hook whose answers a test changes: revoke and rotate take effect for the
// next lookup, as the credential stores' do.
type fakeKeys struct {
	mu    sync.Mutex
	keys  map[string][]byte
	calls map[string]int
}

func newFakeKeys() *fakeKeys {
	f := &fakeKeys{keys: map[string][]byte{}, calls: map[string]int{}}
	for id, k := range keys {
		f.keys[id] = k
	}
	return f
}

func (f *fakeKeys) lookup(id []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[string(id)]++
	if k, ok := f.keys[string(id)]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("identity %q revoked", id)
}

func (f *fakeKeys) set(id string, key []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if key == nil {
		delete(f.keys, id)
	} else {
		f.keys[id] = key
	}
}

func (f *fakeKeys) lookups(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[id]
}

// tryPost sends a CON POST over c and returns the response's code, or an error if none
// came within wait (or the session was closed).
func tryPost(c *dtls.Conn, path, payload string, wait time.Duration) (coapmsg.Code, error) {
	m := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: uint16(mid.Add(1)), Token: []byte{5, 6, 7, 8}, Payload: []byte(payload)}
	for _, seg := range strings.Split(path, "/") {
		m.Options = append(m.Options, coapmsg.Option{Number: coapmsg.URIPath, Value: []byte(seg)})
	}
	b, err := m.Append(nil)
	if err != nil {
		return 0, err
	}
	if _, err := c.Write(b); err != nil {
		return 0, fmt.Errorf("write: %w", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 2048)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return 0, fmt.Errorf("read: %w", err)
		}
		var resp coapmsg.Message
		if err := resp.Decode(buf[:n]); err == nil && resp.MID == m.MID {
			return resp.Code, nil
		}
	}
}

func (ts *testServer) revokedEvictions() float64 {
	return counterValue(ts.reg, "coapgw_dtls_session_evictions_total", "reason", evictRevoked)
}

// expectEnded checks that c's session is refused and gone after its key changed: a request
// RecheckInterval after the change gets no answer and reaches no handler, the session is
// removed and counted as a revoked eviction, and the identity's new handshake with oldKey
// fails.
func expectEnded(t *testing.T, ts *testServer, c *dtls.Conn, interval time.Duration, oldKey []byte) {
	t.Helper()
	before := len(ts.h.all())
	time.Sleep(interval)
	if code, err := tryPost(c, "sensor/dev-1", "after revocation", 500*time.Millisecond); err == nil {
		t.Fatalf("request after the key changed answered %v", code)
	}
	waitFor(t, "the session to be removed", func() bool { est, hs := ts.Sessions(); return est == 0 && hs == 0 })
	if n := len(ts.h.all()); n != before {
		t.Fatalf("handler got %d requests after the key changed", n-before)
	}
	if ev := ts.revokedEvictions(); ev != 1 {
		t.Fatalf("%v revoked evictions, want 1", ev)
	}
	if _, _, err := dial(t, ts.LocalAddr(), "sensor/dev-1", oldKey); err == nil {
		t.Fatal("new handshake with the old key succeeded")
	}
}

// TestRevokedSessionEnds: a live session keeps working, its identity asked again each
// RecheckInterval, while the hook answers its key; once the hook refuses the identity, the
// session's next request after RecheckInterval gets no answer, the session ends and a new
// handshake fails.
func TestRevokedSessionEnds(t *testing.T) {
	const interval = 100 * time.Millisecond
	fk := newFakeKeys()
	ts := startServer(t, Config{PSK: fk.lookup, RecheckInterval: interval, HandshakeTimeout: time.Second})
	c, _, err := dial(t, ts.LocalAddr(), "sensor/dev-1", keys["sensor/dev-1"])
	if err != nil {
		t.Fatal(err)
	}
	atHandshake := fk.lookups("sensor/dev-1")
	for i := range 3 {
		if resp := post(t, c, "sensor/dev-1", fmt.Sprint("valid ", i)); resp.Code != coapmsg.Changed {
			t.Fatalf("request %d: code %v", i, resp.Code)
		}
		time.Sleep(interval)
	}
	if n := fk.lookups("sensor/dev-1") - atHandshake; n < 2 {
		t.Fatalf("identity asked again %d times over 3 intervals, want at least 2", n)
	}
	if est, _ := ts.Sessions(); est != 1 || ts.revokedEvictions() != 0 {
		t.Fatalf("valid session: %d sessions, %v revoked evictions", est, ts.revokedEvictions())
	}
	fk.set("sensor/dev-1", nil)
	expectEnded(t, ts, c, interval, keys["sensor/dev-1"])
	if got := counterValue(ts.reg, "coapgw_dtls_datagrams_total", "disposition", "revoked"); got != 1 {
		t.Fatalf("%v datagrams dropped as revoked, want 1", got)
	}
}

// TestRotatedKeyEndsSession: a session established with a key the hook no longer answers (the
// key was rotated) ends like a revoked one; the device handshakes again with the new key.
func TestRotatedKeyEndsSession(t *testing.T) {
	const interval = 100 * time.Millisecond
	fk := newFakeKeys()
	ts := startServer(t, Config{PSK: fk.lookup, RecheckInterval: interval, HandshakeTimeout: time.Second})
	c, _, err := dial(t, ts.LocalAddr(), "sensor/dev-1", keys["sensor/dev-1"])
	if err != nil {
		t.Fatal(err)
	}
	post(t, c, "sensor/dev-1", "old key")
	newKey := []byte("rotated-PSK-dev-1")
	fk.set("sensor/dev-1", newKey)
	expectEnded(t, ts, c, interval, keys["sensor/dev-1"])
	c2, _, err := dial(t, ts.LocalAddr(), "sensor/dev-1", newKey)
	if err != nil {
		t.Fatalf("handshake with the new key: %v", err)
	}
	time.Sleep(interval)
	if resp := post(t, c2, "sensor/dev-1", "new key"); resp.Code != coapmsg.Changed {
		t.Fatalf("new session: code %v", resp.Code)
	}
}

// TestRevokedSessionRefusedAtWake: a hibernated session, or one restored from the state file,
// whose identity was revoked while it slept is checked before it wakes, and refused.
func TestRevokedSessionRefusedAtWake(t *testing.T) {
	const interval = 100 * time.Millisecond
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprint("restart=", restart), func(t *testing.T) {
			fk := newFakeKeys()
			cfg := Config{PSK: fk.lookup, RecheckInterval: interval, HibernateAfter: 50 * time.Millisecond, HandshakeTimeout: time.Second, StateFile: t.TempDir() + "/sessions"}
			ts := startServer(t, cfg)
			c, _, err := dial(t, ts.LocalAddr(), "sensor/dev-1", keys["sensor/dev-1"])
			if err != nil {
				t.Fatal(err)
			}
			post(t, c, "sensor/dev-1", "before")
			waitFor(t, "the session to hibernate", func() bool { return ts.hibernated.Load() == 1 })
			if restart {
				cfg.Addr = ts.LocalAddr().String()
				ts.stop(t)
				ts = startServer(t, cfg)
				waitFor(t, "the session to be restored", func() bool { return testutil.ToFloat64(ts.m.restored) == 1 })
			}
			fk.set("sensor/dev-1", nil)
			expectEnded(t, ts, c, interval, keys["sensor/dev-1"])
			if n := ts.hibernated.Load(); n != 0 {
				t.Fatalf("%d sessions still hibernated", n)
			}
			if w := testutil.ToFloat64(ts.m.wakes); w != 0 {
				t.Fatalf("revoked session woken %v times", w)
			}
		})
	}
}
