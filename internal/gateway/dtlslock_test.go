package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"

	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/config"
)

// dtlsConfig is testConfig with per-device keys, so that the DTLS port opens, on dtlsAddr.
func dtlsConfig(t *testing.T, dtlsAddr string) config.Config {
	cfg := testConfig(t)
	cfg.Credentials.Key = strings.Repeat("5a", 32)
	cfg.DTLS.Addr = dtlsAddr
	return cfg
}

// freeUDPPort is a UDP port free a moment ago.
func freeUDPPort(t *testing.T) int {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// TestSecondGatewayOnDTLSPortRefused (issue 11): a second gateway on the DTLS port another one
// serves refuses to start with a clear message (coapserver.ErrPortServed, as for the plain
// port), whatever its --coap-sockets and on whichever address form; once the first stops, the
// port is free again.
func TestSecondGatewayOnDTLSPortRefused(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the port lock is Linux only")
	}
	port := uint16(freeUDPPort(t))
	first, err := New(dtlsConfig(t, fmt.Sprintf("127.0.0.1:%d", port)), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, sockets := range []int{1, 4} {
		for _, host := range []string{"127.0.0.1", "0.0.0.0", ""} {
			cfg := dtlsConfig(t, fmt.Sprintf("%s:%d", host, port))
			cfg.CoAP.Sockets = sockets
			_, err := New(cfg, slog.New(slog.DiscardHandler))
			if err == nil {
				t.Fatalf("a second gateway on DTLS port %s (%d CoAP sockets) started", cfg.DTLS.Addr, sockets)
			}
			if !errors.Is(err, coapserver.ErrPortServed) || !strings.Contains(err.Error(), "listen dtls") ||
				!strings.Contains(err.Error(), "already served by another coapgw process") {
				t.Fatalf("second gateway on DTLS port %s: %v, want a clear ErrPortServed", cfg.DTLS.Addr, err)
			}
		}
	}
	first.closeTransports()
	first.local.close(first)
	first.spool.Close()
	g, err := New(dtlsConfig(t, fmt.Sprintf("127.0.0.1:%d", port)), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("DTLS port %d still refused after the first gateway closed: %v", port, err)
	}
	if g.CoAPSAddr().Port() != port {
		t.Errorf("DTLS on %v, want port %d", g.CoAPSAddr(), port)
	}
	g.closeTransports()
	g.local.close(g)
	g.spool.Close()
}
