package dtlsserver

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/coapgw/coapgw/internal/dtlsrecord"
	"github.com/coapgw/coapgw/internal/udpbatch"
)

// The datagram path: the reader takes datagrams in batches and routes each (route, server.go)
// to deliver; Send is the exchange layer's way back.

func (s *Server) read() {
	// One byte more than MaxDatagram: a datagram that fills it was longer, and is dropped whole
	// rather than handed on cut short (its record could not be authenticated anyway).
	r := udpbatch.NewReader(s.conn, readBatch, s.cfg.MaxDatagram+1)
	for {
		n, err := r.Read()
		// The answers sent while a batch is worked through (by this goroutine's handlers, or by
		// the spool's after an fsync) go out together at its end: one wake-up of the sender
		// and one sendmmsg(2), not one each.
		if n > 1 {
			s.out.Hold()
		}
		now := time.Now().UnixNano() // one clock read per batch: the sessions' idle and recheck times
		for i := range n {
			from, data := r.Datagram(i)
			if len(data) > s.cfg.MaxDatagram {
				s.m.disp(dispOversized)
				continue
			}
			s.route(data, from, now)
		}
		if n > 1 {
			s.out.Release()
		}
		if err != nil {
			var ne net.Error
			if errors.Is(err, net.ErrClosed) || (errors.As(err, &ne) && ne.Timeout()) {
				return
			}
			s.log.Warn("dtls read", "err", err)
		}
	}
}

// readBatch is how many datagrams the reader takes per recvmmsg(2), and the sender writes per
// sendmmsg(2).
const readBatch = 32

// deliver hands a datagram to ss after recheck.go's check, if due: to its record layer, or
// queued for its pion Conn. now is when the reader got it (UnixNano).
func (s *Server) deliver(ss *session, data []byte, from netip.AddrPort, now int64) {
	if s.recheckDue(ss, now) && !s.stillValid(ss, now) {
		s.m.disp(dispRevoked)
		return
	}
	ss.mu.Lock()
	if ss.evicted.Load() || ss.gone {
		ss.mu.Unlock()
		s.m.disp(dispUnknownPeer)
		return
	}
	if ss.rec != nil {
		if s.openRecords(ss, data, from, now, false) {
			ss.mu.Unlock()
		}
		return
	}
	// Queued under ss.mu: the handover (fastpath.go) sees every datagram given to pion.
	queued := ss.vc != nil && ss.vc.deliver(data, from)
	ss.mu.Unlock()
	if !queued {
		s.m.disp(dispQueueFull)
		return
	}
	ss.last.Store(now)
	s.m.disp(dispSession)
}

// Send encrypts b to the session whose key is peer (coapserver.Sender).
func (s *Server) Send(peer netip.AddrPort, b []byte) {
	s.mu.RLock()
	ss := s.byKey[peer]
	s.mu.RUnlock()
	if ss == nil || !ss.est.Load() {
		return
	}
	// Written under ss.mu, so that the handover cannot mute and export the session between
	// taking its Conn and the write (the response would be lost). Lock order: a goroutine
	// holding ss.mu may take Server.mu (vconn.WriteTo → moveSession) only for an established
	// session, and Server.mu holders take ss.mu only of sessions in handshake (dropPreCookie).
	ss.mu.Lock()
	if ss.gone {
		ss.mu.Unlock()
		return
	}
	if ss.rec != nil {
		var rec []byte
		var err error
		if s.wakeLocked(ss) {
			rec, err = ss.rec.Seal(nil, dtlsrecord.TypeApplicationData, b)
		}
		ss.mu.Unlock()
		if err != nil {
			s.log.Debug("dtls seal", "peer", peer, "err", err)
		}
		s.sendRecord(rec, ss)
		return
	}
	defer ss.mu.Unlock()
	if ss.conn == nil {
		return
	}
	if _, err := ss.conn.Write(b); err != nil {
		s.log.Debug("dtls write", "peer", peer, "err", err)
	}
}
