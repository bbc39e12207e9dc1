package dtlsserver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"

	"github.com/coapgw/coapgw/internal/dtlsrecord"
)

// The record layer of established sessions (package doc, "Sessions"). pion runs the handshake;
// once the session's first record after it has arrived (the client sends one only after it has
// the server's last flight, so pion will not have to retransmit that flight), the session's
// state is exported from pion (Conn.ConnectionState, State.MarshalBinary), its Conn muted and
// closed, and the session goes on in package dtlsrecord: the server's reader opens each record
// in place and hands the CoAP message to the exchange layer itself, and Send seals the answer
// and writes it, with no goroutine of the session's and no copy on the way.

// handover moves ss from conn to the record layer, from conn's runSession after pion returned
// the session's first record (first, from addr). pion gets no more datagrams; the records it
// decrypted from those it had already taken are queued after first, and the datagrams still
// waiting for it are opened by the record layer, in order. False if the state did not export:
// the session stays on pion.
func (s *Server) handover(ss *session, conn *dtls.Conn, vc *vconn, first []byte, addr netip.AddrPort) bool {
	vc.hold()
	later := drainPion(conn, vc, s.cfg.MaxDatagram)
	ss.mu.Lock()
	if ss.gone || ss.conn != conn {
		ss.mu.Unlock()
		return false
	}
	if err := s.handoverLocked(ss); err != nil {
		vc.held.Store(false)
		vc.mute.Store(false)
		_ = conn.SetReadDeadline(time.Time{})
		ss.mu.Unlock()
		s.log.Warn("dtls session stays on pion", "peer", addr, "err", err)
		return false
	}
	// The exchange layer gets them through the dispatcher, so that the records the reader
	// opens from now on queue behind them (ss.queued).
	s.enqueue(ss, addr, first, nil)
	for _, b := range later {
		s.enqueue(ss, addr, b, nil)
	}
	now := time.Now().UnixNano()
	for {
		select {
		case p := <-vc.in:
			if !s.openRecords(ss, p.data, p.from, now, true) {
				return true // closed by the peer; ss.mu released
			}
			continue
		default:
		}
		break
	}
	ss.mu.Unlock()
	return true
}

// drainPion returns the records pion decrypted and has not returned from Read, once it has
// processed every datagram it took (vc held: it takes no more), or after 50 ms.
func drainPion(conn *dtls.Conn, vc *vconn, size int) [][]byte {
	var later [][]byte
	buf := make([]byte, size)
	deadline := time.Now().Add(50 * time.Millisecond)
	for {
		idle := vc.idle()
		_ = conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		n, err := conn.Read(buf)
		if err == nil {
			later = append(later, append([]byte(nil), buf[:n]...))
			continue
		}
		var ne net.Error
		if idle || time.Now().After(deadline) || !errors.As(err, &ne) || !ne.Timeout() {
			return later
		}
	}
}

// handoverLocked exports ss's state from its pion Conn, which is muted (it sends nothing more,
// not even close_notify, so no record number of the export is used twice), and makes ss's
// record layer of it; ss.mu is held. The caller closes the Conn.
func (s *Server) handoverLocked(ss *session) error {
	ss.vc.mute.Store(true)
	st, ok := ss.conn.ConnectionState()
	if !ok {
		return errors.New("no connection state")
	}
	b, err := st.MarshalBinary()
	if err != nil {
		return fmt.Errorf("export state: %w", err)
	}
	ps, err := dtlsrecord.ParseState(b)
	if err != nil {
		return err
	}
	rec, err := dtlsrecord.New(ps)
	if err != nil {
		return err
	}
	ss.rec, ss.conn, ss.vc = rec, nil, nil
	return nil
}

// openRecords opens the records of a datagram for ss's record layer and hands their CoAP
// messages on: to the exchange layer itself (ss.mu released meanwhile), or through the
// dispatcher if some of the session's wait there or queue is set. ss.mu is held, and still
// held on return unless the session ended (false: closed by the peer, or gone).
func (s *Server) openRecords(ss *session, data []byte, from netip.AddrPort, now int64, queue bool) bool {
	if !s.wakeLocked(ss) {
		s.m.disp(dispBadRecord)
		return true
	}
	for len(data) > 0 {
		r, n, err := ss.rec.Open(data)
		data = data[n:]
		switch {
		case errors.Is(err, dtlsrecord.ErrReplay):
			s.m.disp(dispReplayed)
			continue
		case errors.Is(err, dtlsrecord.ErrAuth):
			s.m.disp(dispUnauthenticated)
			continue
		case err != nil:
			s.m.disp(dispBadRecord)
			continue
		}
		switch r.Type {
		case dtlsrecord.TypeApplicationData:
		case dtlsrecord.TypeAlert:
			if len(r.Data) == 2 && (r.Data[0] == 2 || r.Data[1] == 0) { // fatal, or close_notify
				s.m.disp(dispClosed)
				ss.gone = true
				notify := s.endRecordLocked(ss)
				ss.mu.Unlock()
				s.remove(ss)
				s.sendRecord(notify, ss)
				return false
			}
			s.m.disp(dispBadRecord) // a warning: nothing to do
			continue
		default: // a handshake record (a retransmitted Finished, a renegotiation): not taken
			s.m.disp(dispBadRecord)
			continue
		}
		ss.last.Store(now)
		addr := *ss.addr.Load()
		move := r.Newest && from != addr // RFC 9146 §6: the newest authenticated record
		s.m.disp(dispSession)
		if queue || ss.queued.Load() > 0 {
			if move {
				s.moveSession(ss, from) // lock order: ss.mu, then Server.mu (established)
				addr = from
			}
			s.enqueue(ss, addr, r.Data, nil)
			continue
		}
		ss.mu.Unlock()
		if move {
			s.moveSession(ss, from)
			addr = from
		}
		s.ep.HandleSession(ss.key, addr, ss.identity, r.Data)
		ss.mu.Lock()
		if ss.gone {
			ss.mu.Unlock()
			return false
		}
	}
	return true
}

// endRecordLocked ends ss's record layer (ss.gone is set; ss.mu held) and returns the
// close_notify to send if it was awake.
func (s *Server) endRecordLocked(ss *session) []byte {
	if !ss.rec.Awake() {
		s.hibernated.Add(-1)
		return nil
	}
	b, _ := ss.rec.Seal(nil, dtlsrecord.TypeAlert, []byte{1, 0}) // warning, close_notify
	return b
}

// sendRecord queues a sealed record for ss's address, for the sender (udpbatch.Queue).
func (s *Server) sendRecord(b []byte, ss *session) {
	if len(b) > 0 {
		s.out.Send(*ss.addr.Load(), b)
	}
}
