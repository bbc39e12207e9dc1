package coapclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"

	"github.com/coapgw/coapgw/third_party/pion-dtls"
	"github.com/pion/logging"
)

// HandshakeError is a DTLS handshake that did not complete; Reason says why, as far as a client
// can tell.
type HandshakeError struct {
	Identity string
	Reason   string
	Err      error
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("dtls handshake as %s: %s: %v", e.Identity, e.Reason, e.Err)
}

func (e *HandshakeError) Unwrap() error { return e.Err }

// connectedConn lets pion's client use a connected UDP socket, so the kernel drops datagrams
// from anyone but the server and reports its ICMP errors. It counts the datagrams received, to
// tell a silent server from one that answered but did not complete the handshake.
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

// quietLogs keeps pion from logging; a failed handshake is reported by its error.
var quietLogs = &logging.DefaultLoggerFactory{DefaultLogLevel: logging.LogLevelDisabled, ScopeLevels: map[string]logging.LogLevel{}}

// DialDTLS opens a DTLS 1.2 session to target (host:port) as identity with key psk and
// completes the handshake within ctx. It offers the gateway's two cipher suites, CCM_8 first
// (RFC 7252's mandatory one), and supports Connection IDs (RFC 9146): it sends the ID the server
// issues. A handshake that does not complete is a *HandshakeError. Close the session when done:
// it sends close_notify, so the server can drop the session at once.
func DialDTLS(ctx context.Context, target, identity string, psk []byte) (*dtls.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", target)
	if err != nil {
		return nil, err
	}
	uc := &connectedConn{UDPConn: c.(*net.UDPConn)}
	conn, err := dtls.ClientWithOptions(uc, uc.RemoteAddr(),
		dtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
		dtls.WithPSKIdentityHint([]byte(identity)),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256),
		dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
		dtls.WithLoggerFactory(quietLogs),
	)
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("dtls client: %w", err)
	}
	if err := conn.HandshakeContext(ctx); err != nil {
		conn.Close()
		uc.Close()
		return nil, &HandshakeError{Identity: identity, Reason: handshakeReason(ctx, err, uc.received.Load() > 0), Err: err}
	}
	return conn, nil
}

// handshakeReason says in a few words why a handshake failed; answered is whether the server
// sent anything at all.
func handshakeReason(ctx context.Context, err error, answered bool) string {
	var ne net.Error
	timeout := ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout()
	switch {
	case isAlert(err):
		return "rejected by the gateway (wrong key, or an unknown or revoked identity)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing listens on the port (ICMP port unreachable)"
	case timeout && answered:
		// A gateway that cannot decrypt the client's Finished drops it and waits: the key
		// the client has is not the one the gateway has for this identity.
		return "the gateway answered but did not finish the handshake within the timeout (wrong key?)"
	case timeout:
		return "no answer from the gateway within the timeout"
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
