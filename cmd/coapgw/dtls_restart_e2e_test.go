package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// dtlsDevices gives each of devices ("sensor/dev-0", ...) a per-device key with `coapgw device
// add` in dataDir, and returns the keys by identity.
func dtlsDevices(t *testing.T, dataDir string, devices ...string) map[string][]byte {
	t.Helper()
	deviceEnv(t)
	keyFile := filepath.Join(t.TempDir(), "operator.key")
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("COAPGW_KEY_FILE", keyFile) // the device CLI and the gateway read it
	keys := map[string][]byte{}
	for _, id := range devices {
		key := strings.ReplaceAll(id, "/", "-") + "-secret-key-0"
		if code, out, errs := device(t, "add", id, "--data-dir", dataDir, "--psk-text", key); code != 0 {
			t.Fatalf("device add %s: %d %s %s", id, code, out, errs)
		}
		keys[id] = []byte(key)
	}
	return keys
}

// dtlsSession is a pion DTLS client session (PSK, Connection IDs) on its own UDP socket.
type dtlsSession struct {
	conn *dtls.Conn
	pc   *net.UDPConn
}

// dialSession handshakes with the gateway at server within wait; unlike dialDTLS it may run
// outside the test's goroutine and leaves closing to the caller.
func dialSession(ctx context.Context, server netip.AddrPort, identity string, key []byte, wait time.Duration) (*dtlsSession, error) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	c, err := dtls.ClientWithOptions(pc, net.UDPAddrFromAddrPort(server),
		dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		dtls.WithPSKIdentityHint([]byte(identity)),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
		dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
	)
	if err != nil {
		pc.Close()
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := c.HandshakeContext(hctx); err != nil {
		c.Close()
		pc.Close()
		return nil, err
	}
	return &dtlsSession{conn: c, pc: pc}, nil
}

func (s *dtlsSession) Close() {
	s.conn.Close()
	s.pc.Close()
}

// postCON sends a CON POST over c as a CoAP client does: the same message (same MID and
// token) up to tries times, each time waiting wait for its answer. It returns the answer's
// code, or the last error if none came.
func postCON(c *dtls.Conn, mid uint16, path, payload string, tries int, wait time.Duration) (coapmsg.Code, error) {
	var err error
	for range tries {
		var code coapmsg.Code
		if code, err = postDTLS(c, mid, path, payload, wait); err == nil {
			return code, nil
		}
	}
	return 0, err
}

// dtlsMetric is a metric's value in g's /metrics.
func dtlsMetric(t *testing.T, g *gw, name string) float64 {
	t.Helper()
	return metricValue(t, scrape(t, g), name)
}

const (
	handshakesOK     = `coapgw_dtls_handshakes_total{result="ok"}`
	sessionsRestored = `coapgw_dtls_sessions_restored_total`
)

// TestDTLSGracefulRestartKeepsSessions (issue 10): the gateway stopped with SIGTERM and
// started again on the same data directory and coaps port resumes its DTLS sessions: the
// devices' same client sessions (no new handshake) post again and get 2.04, every record is
// stored, and the second process counts no handshake and the sessions restored.
func TestDTLSGracefulRestartKeepsSessions(t *testing.T) {
	dir := t.TempDir()
	ids := []string{"sensor/dev-1", "sensor/dev-2"}
	keys := dtlsDevices(t, dir, ids...)
	// A fixed coaps port: the clients' sessions are bound to it.
	coaps := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(freeUDPPort(t)))
	start := func() *gw {
		g := startGW(t, dir, "--process", "local", "--coaps-addr", coaps.String())
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("gateway log:\n%s", g.stderr)
			}
		})
		return g
	}
	g := start()

	conns := make([]*dtls.Conn, len(ids))
	for i, id := range ids {
		c, err := dialDTLS(t, coaps, id, keys[id])
		if err != nil {
			t.Fatalf("%s: handshake: %v", id, err)
		}
		conns[i] = c
		if code, err := postCON(c, 1, "/"+id, `{"before":1}`, 3, time.Second); err != nil || code != coapmsg.Changed {
			t.Fatalf("%s: POST before the restart: %v %v", id, code, err)
		}
	}
	if n := dtlsMetric(t, g, handshakesOK); n != float64(len(ids)) {
		t.Fatalf("%v handshakes before the restart, want %d", n, len(ids))
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, g.stderr)
	}
	if !strings.Contains(g.stderr.String(), "dtls sessions saved") {
		t.Errorf("the first gateway does not log its sessions saved:\n%s", g.stderr)
	}

	g = start()
	for i, id := range ids {
		// The same Conn: its next record carries the old session's Connection ID and epoch.
		sent := time.Now()
		code, err := postCON(conns[i], 2, "/"+id, `{"after":2}`, 5, time.Second)
		if err != nil || code != coapmsg.Changed {
			t.Fatalf("%s: POST on the same session after the restart: %v %v", id, code, err)
		}
		t.Logf("%s: 2.04 on the resumed session in %v", id, time.Since(sent).Round(time.Millisecond))
	}
	for _, id := range ids {
		name := strings.TrimPrefix(id, "sensor/")
		var th apiThing
		waitFor(t, name+"'s two records applied", func() bool {
			return getJSON(t, g, "/api/things/"+name, &th) == 200 && th.Messages == 2
		})
		var sh apiShadow
		if getJSON(t, g, "/api/things/"+name+"/shadow", &sh) != 200 || sh.State.Reported["before"] != 1.0 || sh.State.Reported["after"] != 2.0 {
			t.Fatalf("%s's shadow reports %v, want before 1 and after 2", name, sh.State.Reported)
		}
	}
	if n := dtlsMetric(t, g, handshakesOK); n != 0 {
		t.Errorf("%v handshakes after the restart, want 0", n)
	}
	if n := dtlsMetric(t, g, sessionsRestored); n != float64(len(ids)) {
		t.Errorf("%v sessions restored, want %d", n, len(ids))
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, g.stderr)
	}
}

// TestDTLSKill9KeepsAcknowledged (issue 10): DTLS devices post records with distinct property
// names while the gateway is killed with SIGKILL and started again on the same data directory
// and coaps port. A device whose requests go unanswered (its session is gone with the process)
// handshakes again and continues. In the end every record that got 2.04 is in its thing's
// shadow; records that got no answer may or may not be.
func TestDTLSKill9KeepsAcknowledged(t *testing.T) {
	const (
		devices   = 4
		perDevice = 100 // requests at most, retransmissions not counted
		pause     = 10 * time.Millisecond
	)
	dir := t.TempDir()
	ids := make([]string, devices)
	for d := range ids {
		ids[d] = fmt.Sprintf("sensor/k9-%d", d)
	}
	keys := dtlsDevices(t, dir, ids...)
	coaps := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(freeUDPPort(t)))
	var logs []*syncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			for i, l := range logs {
				t.Logf("gateway %d log:\n%s", i+1, l)
			}
		}
	})
	start := func() *gw {
		g := startGW(t, dir, "--process", "local", "--coaps-addr", coaps.String())
		logs = append(logs, g.stderr)
		return g
	}
	g := start()

	var (
		mu        sync.Mutex
		acked     = make([]map[string]float64, devices) // per device: property → value, answered 2.04
		restarted bool                                  // the second gateway is up
		after     = make([]int, devices)                // 2.04s after the restart
		dials     = make([]int, devices)                // handshakes that succeeded
		sent      int
	)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second) // the load's bound in time
	defer cancel()
	var wg sync.WaitGroup
	for d, id := range ids {
		acked[d] = map[string]float64{}
		wg.Go(func() {
			var s *dtlsSession
			defer func() {
				if s != nil {
					s.Close()
				}
			}()
			mid := uint16(rand.IntN(1 << 16))
			for n := 0; n < perDevice && ctx.Err() == nil; {
				if s == nil {
					var err error
					if s, err = dialSession(ctx, coaps, id, keys[id], time.Second); err != nil {
						time.Sleep(50 * time.Millisecond) // the gateway is down: try again
						continue
					}
					mu.Lock()
					dials[d]++
					mu.Unlock()
				}
				mid++
				prop := fmt.Sprintf("p%d", n)
				code, err := postCON(s.conn, mid, "/"+id, fmt.Sprintf(`{%q:%d}`, prop, n), 3, 300*time.Millisecond)
				mu.Lock()
				sent++
				switch {
				case err != nil:
					// No answer: the gateway is down or has lost the session. Handshake again
					// and send the next record; this one may or may not be stored.
					s.Close()
					s = nil
				case code == coapmsg.Changed:
					acked[d][prop] = float64(n)
					if restarted {
						after[d]++
					}
				default:
					t.Errorf("%s: %s answered %v", id, prop, code)
				}
				mu.Unlock()
				n++
				time.Sleep(pause)
			}
		})
	}

	time.Sleep(time.Duration(300+rand.IntN(400)) * time.Millisecond)
	if err := g.stop(syscall.SIGKILL); err == nil {
		t.Fatal("the gateway exited cleanly on SIGKILL")
	}
	mu.Lock()
	before := 0
	for d := range acked {
		before += len(acked[d])
	}
	mu.Unlock()
	if before == 0 {
		t.Fatal("nothing acknowledged before the kill")
	}
	g = start()
	mu.Lock()
	restarted = true
	mu.Unlock()
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("the load did not finish within its 30 s: %d requests sent", sent)
	}
	cancel()

	total := 0
	for d, id := range ids {
		name := strings.TrimPrefix(id, "sensor/")
		if after[d] == 0 {
			t.Errorf("%s: no request acknowledged after the restart (%d handshakes)", name, dials[d])
			continue
		}
		var sh apiShadow
		missing := func() []string {
			var m []string
			if getJSON(t, g, "/api/things/"+name+"/shadow", &sh) != 200 {
				return []string{"the whole thing"}
			}
			for p, v := range acked[d] {
				if sh.State.Reported[p] != v {
					m = append(m, p)
				}
			}
			return m
		}
		for deadline := time.Now().Add(10 * time.Second); len(missing()) > 0; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("%s: %d of %d acknowledged records not in the shadow: %v", name, len(missing()), len(acked[d]), missing())
				break
			}
		}
		total += len(acked[d])
	}
	if !t.Failed() {
		// Sessions may be lost with the process; the devices handshook again (dials: per
		// device, the first handshake included).
		t.Logf("%d requests sent, %d acknowledged (%d before the kill), all in the shadows; handshakes per device %v, on the restarted gateway %v; sessions restored %v",
			sent, total, before, dials, dtlsMetric(t, g, handshakesOK), dtlsMetric(t, g, sessionsRestored))
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, g.stderr)
	}
}
