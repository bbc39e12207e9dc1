package main

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"
	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/protocol/extension"
	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/protocol/handshake"
	"github.com/pion/logging"
	"go.uber.org/goleak"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

var (
	testMaster   = bytes.Repeat([]byte{0x42}, 32)
	testIdentity = "canary/coapgw-canary"
)

// dtlsGateway is a DTLS 1.2 PSK server standing in for the gateway: it derives each identity's
// key from master as the gateway does, knows only the identity want, issues Connection IDs, and
// answers GET /health over the session the way respond says.
type dtlsGateway struct {
	addr string

	mu         sync.Mutex
	identities []string // the PSK identities clients sent, in order
	sessions   int      // completed handshakes
	cids       int      // Connection IDs issued (a ServerHello carries one only if the client offered it)
	closed     int      // sessions the client ended (close_notify)
}

func newDTLSGateway(t *testing.T, master []byte, want string, respond func(req *coapmsg.Message, conn net.Conn)) *dtlsGateway {
	t.Helper()
	g := &dtlsGateway{}
	ln, err := dtls.ListenWithOptions("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)},
		dtls.WithPSK(func(id []byte) ([]byte, error) {
			g.mu.Lock()
			g.identities = append(g.identities, string(id))
			g.mu.Unlock()
			if string(id) != want {
				return nil, fmt.Errorf("unknown identity %q", id)
			}
			return hkdf.Key(sha256.New, master, nil, "coapgw psk v1 "+string(id), 16)
		}),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256),
		dtls.WithConnectionIDGenerator(dtls.RandomCIDGenerator(8)),
		dtls.WithServerHelloMessageHook(func(m handshake.MessageServerHello) handshake.Message {
			for _, e := range m.Extensions {
				if cid, ok := e.(*extension.ConnectionID); ok && len(cid.CID) > 0 {
					g.mu.Lock()
					g.cids++
					g.mu.Unlock()
				}
			}
			return &m
		}),
		dtls.WithLoggerFactory(quietLogs),
	)
	if err != nil {
		t.Fatal(err)
	}
	g.addr = ln.Addr().String()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		stop() // ends pending handshakes and sessions
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				defer context.AfterFunc(ctx, func() { c.Close() })()
				hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				if c.(*dtls.Conn).HandshakeContext(hctx) != nil {
					return
				}
				g.mu.Lock()
				g.sessions++
				g.mu.Unlock()
				buf := make([]byte, 2048)
				for {
					n, err := c.Read(buf)
					if err != nil {
						if ctx.Err() == nil {
							g.mu.Lock()
							g.closed++
							g.mu.Unlock()
						}
						return
					}
					var m coapmsg.Message
					if m.Decode(buf[:n]) != nil || m.Code != coapmsg.GET {
						continue
					}
					if p, _ := m.Option(coapmsg.URIPath); string(p) != "health" {
						continue
					}
					respond(&m, c)
				}
			})
		}
	})
	return g
}

func (g *dtlsGateway) stats() (identities []string, sessions, cids int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.identities...), g.sessions, g.cids
}

// waitClosed waits until the client has ended n sessions.
func (g *dtlsGateway) waitClosed(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		g.mu.Lock()
		closed := g.closed
		g.mu.Unlock()
		if closed == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client ended %d sessions, want %d", closed, n)
		}
	}
}

func write(t *testing.T, conn net.Conn, m coapmsg.Message) {
	b, err := m.Append(nil)
	if err != nil {
		t.Error(err)
		return
	}
	_, _ = conn.Write(b)
}

func piggybacked(t *testing.T) func(*coapmsg.Message, net.Conn) {
	return func(req *coapmsg.Message, conn net.Conn) {
		write(t, conn, coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.Content, MID: req.MID, Token: req.Token, Payload: []byte(`{"status":"ok"}`)})
	}
}

// hkdfRFC5869 is HKDF-SHA256 written out from RFC 5869 (salt nil = HashLen zeros, one block),
// independent of crypto/hkdf.
func hkdfRFC5869(secret []byte, info string, n int) []byte {
	ext := hmac.New(sha256.New, make([]byte, sha256.Size))
	ext.Write(secret)
	exp := hmac.New(sha256.New, ext.Sum(nil))
	exp.Write([]byte(info))
	exp.Write([]byte{1})
	return exp.Sum(nil)[:n]
}

// TestDevicePSK pins the key derivation to the fleet key definition, the one the gateway and the
// load generator use.
func TestDevicePSK(t *testing.T) {
	k, err := devicePSK(testMaster, testIdentity)
	if err != nil {
		t.Fatal(err)
	}
	if want := hkdfRFC5869(testMaster, "coapgw psk v1 "+testIdentity, 16); !bytes.Equal(k, want) {
		t.Errorf("devicePSK = %x, want %x", k, want)
	}
	// Computed with Python's hmac module:
	//	prk = hmac.new(bytes(32), ikm, "sha256").digest()
	//	hmac.new(prk, info + b"\x01", "sha256").digest()[:16]
	if k, _ := devicePSK([]byte("0123456789abcdef"), "sensor/dev-2"); hex.EncodeToString(k) != "16242e1b26fd85269e3e310750c7df28" {
		t.Errorf("devicePSK(0123456789abcdef, sensor/dev-2) = %x", k)
	}
}

func TestProbeDTLS(t *testing.T) {
	psk, err := devicePSK(testMaster, testIdentity)
	if err != nil {
		t.Fatal(err)
	}
	wrongKey, _ := devicePSK(bytes.Repeat([]byte{0x43}, 32), testIdentity)

	ok := newDTLSGateway(t, testMaster, testIdentity, piggybacked(t))
	separate := newDTLSGateway(t, testMaster, testIdentity, func(req *coapmsg.Message, conn net.Conn) {
		write(t, conn, coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.Empty, MID: req.MID})
		write(t, conn, coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.Content, MID: req.MID + 1, Token: req.Token})
	})
	unavailable := newDTLSGateway(t, testMaster, testIdentity, func(req *coapmsg.Message, conn net.Conn) {
		write(t, conn, coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.ServiceUnavailable, MID: req.MID, Token: req.Token})
	})
	var drops atomic.Int64
	lossy := newDTLSGateway(t, testMaster, testIdentity, func(req *coapmsg.Message, conn net.Conn) {
		if drops.Add(1) == 1 { // lose the first transmission: the retransmission must get through
			return
		}
		piggybacked(t)(req, conn)
	})
	// The gateway knows another identity only.
	stranger := newDTLSGateway(t, testMaster, "sensor/dev-1", piggybacked(t))
	// A UDP socket that never answers, and a port nobody listens on.
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	closed, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.LocalAddr().String()
	closed.Close()

	for _, tc := range []struct {
		name      string
		addr      string
		psk       []byte
		wantErr   string // "" for success
		handshake bool   // the error is a failed handshake
	}{
		{"piggybacked", ok.addr, psk, "", false},
		{"separate", separate.addr, psk, "", false},
		{"retransmitted", lossy.addr, psk, "", false},
		{"5.03", unavailable.addr, psk, "5.03", false},
		{"wrong key", ok.addr, wrongKey, "dtls handshake as canary/coapgw-canary: the gateway answered but did not finish the handshake within the timeout (wrong key?)", true},
		{"unknown identity", stranger.addr, psk, "dtls handshake as canary/coapgw-canary: rejected by the gateway", true},
		{"silent", silent.LocalAddr().String(), psk, "no answer from the gateway within the timeout", true},
		{"closed port", closedAddr, psk, "nothing listens on the port", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs, _, err := probeDTLS(t.Context(), tc.addr, 2500*time.Millisecond, testIdentity, tc.psk)
			t.Logf("handshake %v, err %v", hs, err)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("probe: %v", err)
				}
				if hs <= 0 {
					t.Errorf("handshake took %v", hs)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("probe error %v, want %q", err, tc.wantErr)
			}
			if _, isHS := errors.AsType[*handshakeError](err); isHS != tc.handshake {
				t.Errorf("handshake error: %v, want %v", isHS, tc.handshake)
			}
		})
	}
	// Every probe ends its session, so the gateway can forget it at once.
	ok.waitClosed(t, 1)
	separate.waitClosed(t, 1)
	unavailable.waitClosed(t, 1)
	lossy.waitClosed(t, 1)
	// Both handshakes with ok (the right key's and the wrong key's) got as far as the identity
	// and a Connection ID; only the right key's completed.
	if ids, n, cids := ok.stats(); n != 1 || cids != 2 || len(ids) != 2 || ids[0] != testIdentity || ids[1] != testIdentity {
		t.Errorf("gateway saw identities %q, issued %d Connection IDs and completed %d sessions; want %s twice, 2 and 1",
			ids, cids, n, testIdentity)
	}
}

// TestMain checks that no test leaves a goroutine behind: every DTLS session the canary opens
// is closed, handshake or not.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestProbeRealGatewayDTLS runs the canary in DTLS mode against the real gateway, built from
// ../coapgw with a fleet key: the canary's identity and derived key pass the gateway's handshake
// and GET /health answers; a key derived from another master key fails the handshake.
func TestProbeRealGatewayDTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gateway")
	}
	if _, err := os.Stat("../../internal/dtlsserver"); err != nil {
		t.Skip("this tree has no DTLS transport (internal/dtlsserver) yet")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "coapgw")
	if out, err := exec.Command("go", "build", "-o", bin, "../coapgw").CombinedOutput(); err != nil {
		t.Fatalf("build coapgw: %v\n%s", err, out)
	}
	freeUDP := func() string {
		ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.LocalAddr().String()
	}
	plain, coaps := freeUDP(), freeUDP()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := hl.Addr().String()
	hl.Close()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "--data-dir", filepath.Join(dir, "data"), "--coap-addr", plain, "--coaps-addr", coaps, "--http-addr", httpAddr)
	cmd.Env = append(os.Environ(), "COAPGW_FLEET_KEY="+hex.EncodeToString(testMaster))
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := <-exited; err != nil {
			t.Errorf("gateway exit: %v\n%s", err, stderr.String())
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready: %v\n%s", err, stderr.String())
		}
	}

	var logs bytes.Buffer
	c, err := fromEnv(func(k string) string {
		return map[string]string{"COAPGW_CANARY_TARGETS": coaps, "COAPGW_CANARY_IDENTITY": testIdentity,
			"COAPGW_FLEET_KEY": hex.EncodeToString(testMaster)}[k]
	}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	cw := &fakeCW{}
	c.cw = cw
	if err := c.run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := aggregate(cw); got["HealthCheckOK"] != 1 || got["HealthCheckFailed"] != 0 {
		t.Errorf("canary against the gateway: %v, want 1 OK\n%s\n%s", got, logs.String(), stderr.String())
	}
	wrong, _ := devicePSK(bytes.Repeat([]byte{0x43}, 32), testIdentity)
	if _, _, err := probeDTLS(t.Context(), coaps, 2*time.Second, testIdentity, wrong); !errors.As(err, new(*handshakeError)) {
		t.Errorf("probe with a wrong key: %v, want a failed handshake", err)
	}
}

// quietLogs keeps pion from logging in the test gateway.
var quietLogs = &logging.DefaultLoggerFactory{DefaultLogLevel: logging.LogLevelDisabled, ScopeLevels: map[string]logging.LogLevel{}}
