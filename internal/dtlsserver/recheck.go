package dtlsserver

import (
	"crypto/sha256"
	"time"

	"github.com/pion/dtls/v3"
)

// Revocation of live sessions. Config.PSK is asked for a key only at a full handshake; a
// session then lives on its own keys (and across hibernation and restarts, on its exported
// state). So that a revoked or rotated key does not leave its sessions working, each
// established session's identity is asked again, at most once per RecheckInterval, when one
// of its datagrams arrives: the reader compares the datagram's arrival with the session's last
// check (one load and one comparison when not due; no timer or goroutine per session). When
// the hook refuses the identity, or answers another key than the one the session was
// established with (compared by SHA-256, the only trace of the key the session keeps), the
// session is evicted (reason "revoked") without that datagram being handled: the device must
// handshake again, which fails if it is revoked. A hibernated session is checked before it
// wakes. Responses the exchange layer sends on its own (separate responses) are not checked:
// they answer requests accepted before.

// pskOption is the PSK hook of ss's Conns: Config.PSK, recording in ss the SHA-256 of the key
// it answers, and the time (the handshake's lookup is a check).
func (s *Server) pskOption(ss *session) dtls.Option {
	psk := s.cfg.PSK
	return dtls.WithPSK(func(id []byte) ([]byte, error) {
		k, err := psk(id)
		if err == nil {
			sum := sha256.Sum256(k)
			ss.keySum.Store(&sum)
			ss.checked.Store(time.Now().UnixNano())
		}
		return k, err
	})
}

// recheckDue says whether ss's identity is to be checked again for a datagram arriving at now
// (unix nanoseconds): it is established and its last check is RecheckInterval old.
func (s *Server) recheckDue(ss *session, now int64) bool {
	return now-ss.checked.Load() >= int64(s.cfg.RecheckInterval) && ss.est.Load()
}

// stillValid asks Config.PSK again for ss's identity. If the hook refuses it, or answers
// another key than the session's, ss is evicted (reason revoked) and stillValid is false.
func (s *Server) stillValid(ss *session, now int64) bool {
	ss.checked.Store(now)
	k, err := s.cfg.PSK([]byte(ss.identity))
	if sum := ss.keySum.Load(); err == nil && sum != nil && sha256.Sum256(k) == *sum {
		return true
	}
	reason := "key changed"
	if err != nil {
		reason = err.Error()
	}
	s.log.Info("dtls session revoked", "identity", ss.identity, "peer", ss.addr.Load(), "reason", reason)
	s.evict(ss, evictRevoked)
	return false
}
