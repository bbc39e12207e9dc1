package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// dialDTLS makes a pion DTLS client session (PSK, Connection IDs) to the gateway.
func dialDTLS(t *testing.T, server netip.AddrPort, identity string, key []byte) (*dtls.Conn, error) {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
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
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		c.Close()
		pc.Close()
		return nil, err
	}
	t.Cleanup(func() { c.Close(); pc.Close() })
	return c, nil
}

// postDTLS sends a CON POST over c and returns the response's code; an error if none came
// within wait (or the session was closed).
func postDTLS(c *dtls.Conn, mid uint16, path, payload string, wait time.Duration) (coapmsg.Code, error) {
	m := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: mid, Token: []byte{byte(mid >> 8), byte(mid)}, Payload: []byte(payload)}
	for _, seg := range strings.Split(strings.Trim(path, "/"), "/") {
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
		if resp.Decode(buf[:n]) == nil && resp.MID == mid {
			return resp.Code, nil
		}
	}
}

// TestRevokeEndsLiveSession: `coapgw device revoke` run while the gateway serves a device's
// DTLS session ends that session, not only its future handshakes: within a bounded time
// (Refresh 2 s + RecheckInterval 1 s, polled up to 10 s) the same session's next request gets
// no 2.04, nothing sent after that is stored, and a new handshake with the key fails.
func TestRevokeEndsLiveSession(t *testing.T) {
	deviceEnv(t)
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "operator.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COAPGW_KEY_FILE", keyFile) // the device CLI and the gateway read it
	key := "dev-1-secret-key-0"
	if code, out, errs := device(t, "add", "sensor/dev-1", "--data-dir", dir, "--psk-text", key); code != 0 {
		t.Fatalf("device add: %d %s %s", code, out, errs)
	}
	coaps := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(freeUDPPort(t)))
	g := startGW(t, dir, "--process", "local", "--coaps-addr", coaps.String())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", g.stderr)
		}
	})

	c, err := dialDTLS(t, coaps, "sensor/dev-1", []byte(key))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	var mid uint16
	seq := 0 // the last request answered 2.04
	send := func(wait time.Duration) (coapmsg.Code, error) {
		mid++
		return postDTLS(c, mid, "/sensor/dev-1", fmt.Sprintf(`{"seq":%d}`, seq+1), wait)
	}
	for range 3 {
		code, err := send(5 * time.Second)
		if err != nil || code != coapmsg.Changed {
			t.Fatalf("request %d before revocation: %v %v", seq+1, code, err)
		}
		seq++
	}

	if code, out, errs := device(t, "revoke", "sensor/dev-1", "--data-dir", dir); code != 0 {
		t.Fatalf("device revoke: %d %s %s", code, out, errs)
	}
	revoked := time.Now()
	var refused time.Duration
	for {
		if time.Since(revoked) > 10*time.Second {
			t.Fatalf("the revoked session still gets 2.04 %v after the revocation", time.Since(revoked))
		}
		code, err := send(time.Second)
		if err == nil && code == coapmsg.Changed {
			seq++ // accepted before the gateway saw the revocation: stored
			time.Sleep(100 * time.Millisecond)
			continue
		}
		refused = time.Since(revoked)
		t.Logf("first request refused %v after the revocation (%d accepted in all): %v %v", refused.Round(time.Millisecond), seq, code, err)
		break
	}
	// The session is over: later requests on it get nothing either.
	for range 2 {
		if code, err := send(500 * time.Millisecond); err == nil && code == coapmsg.Changed {
			t.Fatalf("a request after the refused one got 2.04")
		}
	}
	if _, err := dialDTLS(t, coaps, "sensor/dev-1", []byte(key)); err == nil {
		t.Fatal("a new handshake with the revoked key succeeded")
	}

	// Everything answered 2.04 is stored, and nothing else.
	var th apiThing
	waitFor(t, "the accepted records applied", func() bool {
		return getJSON(t, g, "/api/things/dev-1", &th) == 200 && th.Messages == int64(seq)
	})
	time.Sleep(500 * time.Millisecond)
	var sh apiShadow
	if getJSON(t, g, "/api/things/dev-1", &th) != 200 || th.Messages != int64(seq) {
		t.Fatalf("dev-1 has %d messages, want the %d accepted", th.Messages, seq)
	}
	if getJSON(t, g, "/api/things/dev-1/shadow", &sh) != 200 || sh.State.Reported["seq"] != float64(seq) {
		t.Fatalf("dev-1's shadow reports seq %v, want %d", sh.State.Reported["seq"], seq)
	}
	if !strings.Contains(scrape(t, g), `coapgw_dtls_session_evictions_total{reason="revoked"} 1`) {
		t.Errorf("no revoked eviction in the metrics")
	}
	if err := g.stop(15); err != nil { // SIGTERM
		t.Fatalf("gateway exit: %v\n%s", err, g.stderr)
	}
}
