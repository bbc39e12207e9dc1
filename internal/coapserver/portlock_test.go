package coapserver

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func listenServer(t *testing.T, addr string, sockets int) (*Server, error) {
	t.Helper()
	s, err := New(Config{Addr: addr, Sockets: sockets}, echoHandler{}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { s.Close() })
	return s, nil
}

// TestSecondGatewayOnPortRefused: a Server on a UDP port another Server already serves refuses to
// start with ErrPortServed, whatever either's Sockets says and whichever address form it names
// (the SO_REUSEPORT sockets of Sockets > 1 would otherwise let it join the port and split the
// devices between two registries). Once the first is closed, the port is free again.
func TestSecondGatewayOnPortRefused(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the port lock is Linux only")
	}
	for _, first := range []int{1, 2} {
		t.Run(fmt.Sprintf("first with %d sockets", first), func(t *testing.T) {
			a, err := listenServer(t, "127.0.0.1:0", first)
			if err != nil {
				t.Fatal(err)
			}
			port := a.LocalAddr().Port()
			for _, second := range []int{2, 1, 3} {
				for _, host := range []string{"127.0.0.1", "", "0.0.0.0"} {
					addr := fmt.Sprintf("%s:%d", host, port)
					_, err := listenServer(t, addr, second)
					if err == nil {
						t.Fatalf("a second server on %s with %d sockets started", addr, second)
					}
					if !errors.Is(err, ErrPortServed) || !strings.Contains(err.Error(), "already served by another coapgw process") {
						t.Fatalf("second server on %s with %d sockets: %v, want ErrPortServed", addr, second, err)
					}
				}
			}
			a.Close()
			if _, err := listenServer(t, fmt.Sprintf("127.0.0.1:%d", port), 2); err != nil {
				t.Fatalf("port %d still refused after the first server closed: %v", port, err)
			}
		})
	}
}

// TestPortHeldByOtherProgram: a port held by a socket that is no gateway fails the bind with
// EADDRINUSE as before, with 1 socket or 2, and the failed Listen leaves no lock behind.
func TestPortHeldByOtherProgram(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	for _, n := range []int{1, 2} {
		_, err := listenServer(t, addr, n)
		if !errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, ErrPortServed) {
			t.Fatalf("%d sockets on a port another program holds: %v, want EADDRINUSE", n, err)
		}
	}
	pc.Close()
	if _, err := listenServer(t, addr, 2); err != nil {
		t.Fatalf("a failed Listen left the port locked: %v", err)
	}
}
