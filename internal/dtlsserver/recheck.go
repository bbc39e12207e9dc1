package dtlsserver

import (
	"crypto/sha256"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"
)

// Revocation of live sessions (package doc, "Revocation"): Server.deliver asks recheckDue for
// every datagram of a session (one load, one comparison) and, when due, stillValid asks
// Config.PSK again, before the datagram is queued or opened (and a hibernated session woken). A session
// keeps only the SHA-256 of its key, set by the PSK hook at the handshake (and saved with it
// in StateFile).

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
// (unix nanoseconds): it is established, not being closed, and its last check is
// RecheckInterval old.
func (s *Server) recheckDue(ss *session, now int64) bool {
	return now-ss.checked.Load() >= int64(s.cfg.RecheckInterval) && ss.est.Load() && !ss.evicted.Load()
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
