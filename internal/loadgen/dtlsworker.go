package loadgen

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/coapgw/coapgw/third_party/pion-dtls"
	"golang.org/x/sys/unix"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/dtlsrecord"
)

// dtlsSession is a device's DTLS session once pion's handshake is done: its own connected,
// non-blocking UDP socket (a duplicate of the one pion used) and the session's record layer
// (package dtlsrecord, shared with the gateway's DTLS server). The worker drives it from its
// epoll loop like a plain device, sealing each request and opening each answer itself: no
// goroutine per session and no hand-off per message.
type dtlsSession struct {
	fd   int
	port int
	rec  *dtlsrecord.Conn
}

// mutableConn is the socket pion's client uses: connected (so each device has its own source
// port and the kernel drops datagrams from anyone but the server, as in plain mode), and muted
// once the session is handed over, so that pion's Close sends no close_notify.
type mutableConn struct {
	*net.UDPConn
	mute atomic.Bool
}

func (c *mutableConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	if c.mute.Load() {
		return len(p), nil
	}
	return c.Write(p)
}

// handover takes the session from pion once its handshake completed (the client has the
// server's last flight): the socket is duplicated, pion's Conn muted, its state exported into a
// record layer, and the Conn (with its socket) closed.
func handover(conn *dtls.Conn, uc *net.UDPConn, mc *mutableConn) (*dtlsSession, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.Dup(int(s)) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup: %w", derr)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	mc.mute.Store(true)
	rec, err := exportSession(conn)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("handover: %w", err)
	}
	port := uc.LocalAddr().(*net.UDPAddr).Port
	_ = conn.Close()
	return &dtlsSession{fd: fd, port: port, rec: rec}, nil
}

func exportSession(conn *dtls.Conn) (*dtlsrecord.Conn, error) {
	st, ok := conn.ConnectionState()
	if !ok {
		return nil, errors.New("no connection state")
	}
	b, err := st.MarshalBinary()
	if err != nil {
		return nil, err
	}
	ps, err := dtlsrecord.ParseState(b)
	if err != nil {
		return nil, err
	}
	return dtlsrecord.New(ps)
}

// close tells the server the session ends (close_notify) and closes its socket.
func (s *dtlsSession) close() {
	if b, err := s.rec.Seal(nil, dtlsrecord.TypeAlert, []byte{1, 0}); err == nil {
		_, _ = unix.Write(s.fd, b)
	}
	unix.Close(s.fd)
}

// addDTLS adds global device g, which has the established session s; the worker polls its
// socket but does not close it (the handshake phase's owner does, after a close_notify).
func (w *worker) addDTLS(g int, s *dtlsSession, opts []coapmsg.Option) error {
	i := len(w.devs)
	w.devs = append(w.devs, device{
		fd:      s.fd,
		rec:     s.rec,
		port:    s.port,
		mid:     uint16(w.rng.Uint64()),
		startAt: int64(w.cfg.Ramp) * int64(g) / int64(w.cfg.Devices),
		opts:    opts,
	})
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	ev.Fd = int32(i)
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// writeDTLS seals p into one record of d's session and sends it.
func (w *worker) writeDTLS(d *device, p []byte) error {
	var err error
	if w.sbuf, err = d.rec.Seal(w.sbuf[:0], dtlsrecord.TypeApplicationData, p); err != nil {
		return err
	}
	_, err = unix.Write(d.fd, w.sbuf)
	return err
}

// receiveDTLS opens the records of a datagram of device di's session and handles their
// messages like plain datagrams. A record that does not open, or an alert (the server ended
// the session), counts as a receive error.
func (w *worker) receiveDTLS(di int, b []byte, now int64) {
	for len(b) > 0 {
		r, n, err := w.devs[di].rec.Open(b)
		b = b[n:]
		if err != nil || r.Type != dtlsrecord.TypeApplicationData {
			if w.counting(now) {
				w.c.recvErrors++
			}
			continue
		}
		w.handle(di, r.Data, now)
	}
}
