package dtlsserver

import (
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"
)

// A session quiet for HibernateAfter is hibernated: its record layer drops the keys derived
// from the master secret (and the AES state built from them), leaving a few hundred bytes. The
// next datagram routed to it, or the next response the exchange layer sends it, wakes it: the
// keys are derived again (pion's PRF), with no handshake and nothing for the peer to see. A
// session still on pion's Conn (no record since its handshake) is handed over to the record
// layer first (fastpath.go).

// janitor closes sessions idle for IdleTimeout, hibernates those quiet for HibernateAfter, and
// hands over to the record layer those still on pion's Conn quiet for handoverAfter.
func (s *Server) janitor() {
	defer s.wg.Done()
	every := min(max(min(s.cfg.IdleTimeout, s.handoverAfter())/8, 10*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	var idle, quiet []*session
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		idleCut := now.Add(-s.cfg.IdleTimeout).UnixNano()
		quietCut := now.Add(-s.handoverAfter()).UnixNano() // hibernate decides which quiet ones go
		idle, quiet = idle[:0], quiet[:0]
		s.mu.RLock()
		for _, ss := range s.byKey {
			if !ss.est.Load() {
				continue
			}
			switch last := ss.last.Load(); {
			case last < idleCut:
				idle = append(idle, ss)
			case last < quietCut:
				quiet = append(quiet, ss)
			}
		}
		s.mu.RUnlock()
		for _, ss := range idle {
			s.evict(ss, evictIdle)
		}
		for _, ss := range quiet {
			s.hibernate(ss, now)
		}
	}
}

// handoverMax bounds how long a session whose handshake completed stays on pion's Conn without
// a record: a client that lost the server's last flight retransmits its own within a second or
// two (pion answers it), and a pion Conn costs ~50 KB where the record layer costs ~2.5 KB.
// (A variable for tests.)
var handoverMax = 5 * time.Second

// handoverAfter is how long an established session on pion's Conn waits for a datagram before
// the janitor hands it over: handoverMax, or HibernateAfter if shorter.
func (s *Server) handoverAfter() time.Duration { return min(s.hibernateAfter(), handoverMax) }

func (s *Server) hibernateAfter() time.Duration {
	if s.cfg.HibernateAfter < 0 {
		return s.cfg.IdleTimeout
	}
	return s.cfg.HibernateAfter
}

// evict closes ss for reason (idle, cap, revoked), once: an awake session is told
// (close_notify).
func (s *Server) evict(ss *session, reason string) {
	if !ss.evicted.CompareAndSwap(false, true) {
		return
	}
	s.m.evict(reason)
	ss.mu.Lock()
	conn := ss.conn
	if ss.rec == nil || ss.gone {
		ss.mu.Unlock()
		if conn != nil {
			_ = conn.Close() // its runSession removes it
		}
		return
	}
	ss.gone = true
	notify := s.endRecordLocked(ss)
	ss.mu.Unlock()
	s.remove(ss)
	s.sendRecord(notify, ss)
}

// hibernate drops the derived keys of ss if it has been quiet for HibernateAfter (unless
// hibernation is off). A session still on pion's Conn (no record since its handshake) and quiet
// for handoverAfter is handed over to the record layer first.
func (s *Server) hibernate(ss *session, now time.Time) {
	ss.mu.Lock()
	last := ss.last.Load()
	sleep := s.cfg.HibernateAfter >= 0 && last < now.Add(-s.hibernateAfter()).UnixNano()
	var conn *dtls.Conn
	switch {
	case ss.gone:
	case ss.rec != nil:
	case ss.conn != nil && last < now.Add(-s.handoverAfter()).UnixNano() && len(ss.vc.in) == 0 && ss.vc.idle():
		// pion has taken every datagram routed to it and processed them (deliver queues under
		// ss.mu, so none comes in between): nothing is lost when its Conn closes.
		conn = ss.conn
		if err := s.handoverLocked(ss); err != nil {
			ss.mu.Unlock()
			s.log.Warn("dtls session not handed over", "peer", ss.addr.Load(), "err", err)
			return
		}
	}
	if sleep && !ss.gone && ss.rec != nil && ss.rec.Awake() {
		ss.rec.Sleep()
		s.hibernated.Add(1)
		s.m.hibernations.Inc()
	}
	ss.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
}

// wakeLocked derives the keys of a hibernated ss again; ss.mu is held. False if they cannot be.
func (s *Server) wakeLocked(ss *session) bool {
	if ss.rec.Awake() {
		return true
	}
	if err := ss.rec.Wake(); err != nil {
		s.log.Warn("dtls session does not wake", "peer", ss.addr.Load(), "err", err)
		return false
	}
	s.hibernated.Add(-1)
	s.m.wakes.Inc()
	return true
}

// export ends every session for Shutdown: each is muted and marked gone, and the established
// ones' states are returned for the state file, with the Conns left to close.
func (s *Server) export(all []*session) ([]savedSession, []*dtls.Conn) {
	var saved []savedSession
	var conns []*dtls.Conn
	for _, ss := range all {
		ss.mu.Lock()
		if ss.gone {
			ss.mu.Unlock()
			continue
		}
		ss.gone = true
		var state []byte
		var err error
		switch {
		case ss.rec != nil:
			st := ss.rec.State()
			state, err = st.Marshal()
		case ss.conn != nil:
			ss.vc.mute.Store(true)
			conns = append(conns, ss.conn)
			if st, ok := ss.conn.ConnectionState(); ok && ss.est.Load() {
				state, err = st.MarshalBinary()
			}
		}
		ss.mu.Unlock()
		if err != nil {
			s.log.Warn("dtls session not saved", "peer", ss.addr.Load(), "err", err)
		}
		if state != nil && ss.est.Load() {
			sv := savedSession{Addr: *ss.addr.Load(), CID: []byte(ss.cid), Identity: ss.identity, Last: ss.last.Load(), State: state}
			if sum := ss.keySum.Load(); sum != nil {
				sv.KeySum = sum[:]
			}
			saved = append(saved, sv)
		}
	}
	return saved, conns
}
