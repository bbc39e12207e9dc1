package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/logging"
)

// handshakeError is a DTLS handshake that did not complete; its message says why, as far as
// the canary can tell.
type handshakeError struct {
	identity string
	reason   string
	err      error
}

func (e *handshakeError) Error() string {
	return fmt.Sprintf("dtls handshake as %s: %s: %v", e.identity, e.reason, e.err)
}

func (e *handshakeError) Unwrap() error { return e.err }

// connectedConn lets pion's client use a connected UDP socket, so the kernel drops datagrams
// from anyone but the gateway and reports its ICMP errors. It counts the datagrams received, to
// tell a silent gateway from one that answered but did not complete the handshake.
type connectedConn struct {
	*net.UDPConn
	received atomic.Int64
}

func (c *connectedConn) WriteTo(p []byte, _ net.Addr) (int, error) { return c.Write(p) }

func (c *connectedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.UDPConn.ReadFrom(p)
	if err == nil {
		c.received.Add(1)
	}
	return n, addr, err
}

// quietLogs keeps pion from logging; a failed handshake is reported by the probe's error.
var quietLogs = &logging.DefaultLoggerFactory{DefaultLogLevel: logging.LogLevelDisabled, ScopeLevels: map[string]logging.LogLevel{}}

// probeDTLS opens a DTLS 1.2 session to target as identity with key psk, within timeout, and
// checks GET /health over it as probe does over plain UDP. It offers the gateway's two cipher
// suites, CCM_8 first (RFC 7252's mandatory one), and supports Connection IDs (RFC 9146): it
// sends the ID the gateway issues. It returns the handshake's duration with the probe's error;
// a handshake that does not complete is a *handshakeError.
func probeDTLS(ctx context.Context, target string, timeout time.Duration, identity string, psk []byte) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", target)
	if err != nil {
		return 0, err
	}
	uc := &connectedConn{UDPConn: c.(*net.UDPConn)}
	defer uc.Close() // pion closes it too when it closes the session; the second close is harmless
	start := time.Now()
	conn, err := dtls.ClientWithOptions(uc, uc.RemoteAddr(),
		dtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
		dtls.WithPSKIdentityHint([]byte(identity)),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256),
		dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
		dtls.WithLoggerFactory(quietLogs),
	)
	if err != nil {
		return 0, fmt.Errorf("dtls client: %w", err)
	}
	defer conn.Close() // sends close_notify, so the gateway can drop the session at once
	if err := conn.HandshakeContext(ctx); err != nil {
		return time.Since(start), &handshakeError{identity: identity, reason: handshakeReason(ctx, err, uc.received.Load() > 0), err: err}
	}
	hs := time.Since(start)
	return hs, checkHealth(ctx, conn)
}

// handshakeReason says in a few words why a handshake failed; answered is whether the gateway
// sent anything at all.
func handshakeReason(ctx context.Context, err error, answered bool) string {
	var ne net.Error
	switch {
	case isAlert(err):
		return "rejected by the gateway (wrong key, or an unknown or revoked identity)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing listens on the port (ICMP port unreachable)"
	case (ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout()) && answered:
		// A gateway that cannot decrypt the client's Finished drops it and waits: the key the
		// canary derived is not the one the gateway derived for this identity.
		return "the gateway answered but did not finish the handshake within the probe timeout (wrong key?)"
	case ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout():
		return "no answer from the gateway within the probe timeout"
	}
	return "failed"
}

// isAlert reports whether err is a DTLS alert (pion keeps the type private).
func isAlert(err error) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		if _, ok := err.(interface{ IsFatalOrCloseNotify() bool }); ok {
			return true
		}
	}
	return false
}
