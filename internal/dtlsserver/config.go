package dtlsserver

import (
	"errors"
	"fmt"
	"time"
)

// PSKFunc returns the pre-shared key for a PSK identity, or an error to refuse the handshake. It
// is called at every full handshake, from any goroutine, and again for an established
// session's identity at most once per Config.RecheckInterval, from the server's reader: it must
// be cheap (an in-memory lookup).
type PSKFunc func(identity []byte) ([]byte, error)

// Config is the DTLS transport's configuration. The cipher suites are fixed
// (TLS_PSK_WITH_AES_128_CCM_8 and TLS_PSK_WITH_AES_128_GCM_SHA256), as are DTLS 1.2, the
// HelloVerifyRequest cookie exchange and 8-byte Connection IDs issued by the server.
type Config struct {
	Addr string // listen address, e.g. ":5684"
	// PSK looks up the key of the identity a client names; required.
	PSK PSKFunc
	// MaxSessions bounds established sessions; a handshake completing at the cap evicts the
	// least recently active one. Default 100,000.
	MaxSessions int
	// MaxHandshakes bounds handshakes in progress, each started by a ClientHello with a valid
	// cookie (the cookie exchange keeps no state); a ClientHello past it is dropped. Default
	// 1,024.
	MaxHandshakes int
	// IdleTimeout closes a session with no datagram for this long. Default 24 h.
	IdleTimeout time.Duration
	// HibernateAfter: a session without datagrams for this long drops the keys derived from its
	// master secret (keeping ~1.3 KB) until its next datagram wakes it. Default 30 s;
	// negative: never.
	HibernateAfter time.Duration
	// HandshakeTimeout abandons a handshake not finished in this time. Default 10 s.
	HandshakeTimeout time.Duration
	// StateFile, if set, is where Shutdown saves established sessions and Listen loads them
	// (and removes the file: a saved session is resumed at most once). It holds key material:
	// it is written with mode 0600.
	StateFile string
	// RecheckInterval: an established session's identity is asked of PSK again, when a
	// datagram of it arrives at least this long after the last check; a refused identity or a
	// changed key ends the session (see the package doc, "Revocation"). Default 1 s.
	RecheckInterval time.Duration
	// MaxDatagram is the longest datagram read; default 2048 bytes.
	MaxDatagram int
	// SessionQueue is how many datagrams wait for a busy session before more are dropped;
	// default 16.
	SessionQueue int
}

func (c *Config) defaults() {
	if c.MaxSessions <= 0 {
		c.MaxSessions = 100_000
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 1024
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 24 * time.Hour
	}
	if c.HibernateAfter == 0 {
		c.HibernateAfter = 30 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.RecheckInterval <= 0 {
		c.RecheckInterval = time.Second
	}
	if c.MaxDatagram <= 0 {
		c.MaxDatagram = 2048
	}
	if c.SessionQueue <= 0 {
		c.SessionQueue = 16
	}
}

// Validate reports every problem with c at once; zero values are valid (they take defaults)
// except Addr and PSK.
func (c Config) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("dtls: empty listen address"))
	}
	if c.PSK == nil {
		errs = append(errs, errors.New("dtls: no PSK lookup"))
	}
	for _, v := range []struct {
		name string
		n    int64
	}{
		{"max sessions", int64(c.MaxSessions)}, {"max handshakes", int64(c.MaxHandshakes)},
		{"idle timeout", int64(c.IdleTimeout)}, {"handshake timeout", int64(c.HandshakeTimeout)},
		{"max datagram", int64(c.MaxDatagram)}, {"session queue", int64(c.SessionQueue)},
		{"recheck interval", int64(c.RecheckInterval)},
	} {
		if v.n < 0 {
			errs = append(errs, fmt.Errorf("dtls: negative %s", v.name))
		}
	}
	if c.MaxDatagram > 0 && c.MaxDatagram < 256 {
		errs = append(errs, fmt.Errorf("dtls: max datagram %d below 256", c.MaxDatagram))
	}
	return errors.Join(errs...)
}
