package dtlsserver

import (
	"net"
	"time"

	"github.com/pion/dtls/v3"
)

// A session quiet for HibernateAfter is hibernated: its Conn is muted (it sends nothing more,
// not even close_notify), its state exported (Conn.ConnectionState, State.MarshalBinary: keys,
// epoch, record sequence numbers, Connection IDs) and the Conn closed, leaving a few hundred
// bytes. The next datagram routed to it, or the next response the exchange layer sends it,
// wakes it (dtls.ResumeWithOptions) with a new Conn. The exported state is used once: it is
// dropped when the session wakes, and the muted Conn never sends a record numbered after the
// export, so no record sequence number (hence no AEAD nonce) is used twice.

// janitor closes sessions idle for IdleTimeout and hibernates those quiet for HibernateAfter.
func (s *Server) janitor() {
	defer s.wg.Done()
	every := min(max(min(s.cfg.IdleTimeout, s.hibernateAfter())/8, 10*time.Millisecond), time.Minute)
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
		quietCut := now.Add(-s.hibernateAfter()).UnixNano()
		idle, quiet = idle[:0], quiet[:0]
		s.mu.RLock()
		for _, ss := range s.byKey {
			if !ss.est.Load() {
				continue
			}
			switch last := ss.last.Load(); {
			case last < idleCut:
				idle = append(idle, ss)
			case s.cfg.HibernateAfter >= 0 && last < quietCut:
				quiet = append(quiet, ss)
			}
		}
		s.mu.RUnlock()
		for _, ss := range idle {
			s.evict(ss, evictIdle)
		}
		for _, ss := range quiet {
			s.hibernate(ss)
		}
	}
}

func (s *Server) hibernateAfter() time.Duration {
	if s.cfg.HibernateAfter < 0 {
		return s.cfg.IdleTimeout
	}
	return s.cfg.HibernateAfter
}

// evict closes ss for reason (idle, cap, revoked), once.
func (s *Server) evict(ss *session, reason string) {
	if !ss.evicted.CompareAndSwap(false, true) {
		return
	}
	s.m.evict(reason)
	ss.mu.Lock()
	conn := ss.conn
	asleep := conn == nil && !ss.gone
	if asleep {
		ss.gone, ss.hib = true, nil
	}
	ss.mu.Unlock()
	switch {
	case asleep:
		s.hibernated.Add(-1)
		s.remove(ss)
	case conn != nil:
		_ = conn.Close() // its runSession removes it
	}
}

// hibernate exports ss's state and closes its Conn, if it is awake and quiet.
func (s *Server) hibernate(ss *session) {
	ss.mu.Lock()
	if ss.gone || ss.conn == nil || len(ss.vc.in) > 0 || ss.last.Load() >= time.Now().Add(-s.hibernateAfter()).UnixNano() {
		ss.mu.Unlock()
		return
	}
	ss.vc.mute.Store(true)
	st, ok := ss.conn.ConnectionState()
	var b []byte
	var err error
	if ok {
		b, err = st.MarshalBinary()
	}
	if !ok || err != nil {
		ss.vc.mute.Store(false)
		ss.mu.Unlock()
		s.log.Warn("dtls session not hibernated", "peer", ss.addr.Load(), "err", err)
		return
	}
	conn := ss.conn
	ss.conn, ss.vc, ss.hib = nil, nil, b
	ss.mu.Unlock()
	s.hibernated.Add(1)
	s.m.hibernations.Inc()
	_ = conn.Close()
}

// wakeLocked resumes a hibernated ss with a new Conn; ss.mu is held. False if ss is gone or its
// state does not resume (it stays asleep until evicted).
func (s *Server) wakeLocked(ss *session) bool {
	if ss.gone || ss.hib == nil {
		return false
	}
	var st dtls.State
	if err := st.UnmarshalBinary(ss.hib); err != nil {
		s.log.Warn("dtls session does not wake", "peer", ss.addr.Load(), "err", err)
		return false
	}
	vc := newVconn(s, ss, s.cfg.SessionQueue)
	opts := append(append(make([]dtls.Option, 0, len(s.opts)+1), s.opts...), s.pskOption(ss))
	conn, err := dtls.ResumeWithOptions(&st, vc, net.UDPAddrFromAddrPort(*ss.addr.Load()), opts...)
	if err != nil {
		s.log.Warn("dtls session does not wake", "peer", ss.addr.Load(), "err", err)
		return false
	}
	ss.conn, ss.vc, ss.hib = conn, vc, nil
	s.hibernated.Add(-1)
	s.m.wakes.Inc()
	s.wg.Add(1)
	go s.runSession(ss, conn, vc, true)
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
		state := ss.hib
		if ss.conn != nil {
			ss.vc.mute.Store(true)
			conns = append(conns, ss.conn)
			state = nil
			if st, ok := ss.conn.ConnectionState(); ok && ss.est.Load() {
				b, err := st.MarshalBinary()
				if err != nil {
					s.log.Warn("dtls session not saved", "peer", ss.addr.Load(), "err", err)
				}
				state = b
			}
		}
		ss.mu.Unlock()
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
