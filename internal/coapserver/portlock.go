package coapserver

import (
	"errors"
	"fmt"
	"net"
)

// LockPort takes the machine-wide lock on UDP port port (lockPort) for a server of kind (e.g.
// "udp", "dtls") that listens on addr, so that a second gateway on a port another one serves
// refuses to start with a clear message instead of joining it. Every coapgw server of a port,
// plain CoAP or DTLS, takes the same lock. The error wraps ErrPortServed when another process
// (or another server in this one) holds it. release frees the lock; the kernel also frees it
// when the process ends, however it ends. Elsewhere than Linux it does nothing.
func LockPort(kind, addr string, port uint16) (release func(), err error) {
	release, err = lockPort(port)
	if errors.Is(err, ErrPortServed) {
		return nil, fmt.Errorf("listen %s %s: port %d/udp: %w; a second gateway there would split the devices between two registries: stop the other one or choose another address", kind, addr, port, err)
	}
	if err != nil {
		return nil, fmt.Errorf("listen %s %s: lock port %d: %w", kind, addr, port, err)
	}
	return release, nil
}

// ListenPort is the UDP port of a listen address ("host:port", ":port", a service name); 0 means
// the kernel picks one at bind time (lock that one after the bind).
func ListenPort(addr string) (uint16, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := net.LookupPort("udp", p)
	if err != nil {
		return 0, err
	}
	return uint16(n), nil
}
