package dtlsserver

import (
	"crypto/sha256"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"

	"github.com/coapgw/coapgw/internal/dtlsrecord"
)

// cidLen is the length of the Connection IDs the server issues (RFC 9146).
const cidLen = 8

// session is one DTLS peer: during its handshake (and until its first record after it) a pion
// Conn over a virtual PacketConn (vconn) that the server's reader feeds with the datagrams
// routed to it, by Connection ID or by address; after that its record layer (fastpath.go).
type session struct {
	key netip.AddrPort // stable stand-in for the peer in the exchange layer (see sessionKey)
	num uint64
	cid string

	identity string       // set once the handshake completed
	est      atomic.Bool  // handshake completed (or restored)
	last     atomic.Int64 // unix nanoseconds of the last datagram routed to it
	addr     atomic.Pointer[netip.AddrPort]
	evicted  atomic.Bool // the server decided to close it (idle, cap, revoked)
	// keySum is the SHA-256 of the PSK the session was established with (set by the PSK hook
	// during the handshake), and checked the unix nanoseconds of the last check of its identity
	// against Config.PSK (see recheck.go).
	keySum  atomic.Pointer[[sha256.Size]byte]
	checked atomic.Int64
	// prev is the established session that had this address when this one's ClientHello came
	// from it, until this handshake completes (guarded by Server.mu).
	prev *session

	// queued counts its datagrams waiting in a dispatcher: while some do, the reader queues
	// the session's next ones behind them rather than handing them on itself (fastpath.go).
	queued atomic.Int32

	mu   sync.Mutex
	conn *dtls.Conn // pion's, until the handshake's first record after it (nil after)
	vc   *vconn     // conn's (nil with it)
	// rec is the session's record layer once pion handed it over (fastpath.go): asleep
	// (hibernated) or awake.
	rec  *dtlsrecord.Conn
	gone bool // removed: neither delivered to nor woken again
}

// sessionKey is the exchange layer's peer for session n: an address in 100::/64, the IPv6
// discard-only prefix (RFC 6666), port 0. The session, not its current address, is the peer: a
// device whose NAT mapping changes keeps its deduplication state and its separate responses.
func sessionKey(n uint64) netip.AddrPort {
	var a [16]byte
	a[0] = 0x01
	for i := 0; i < 8; i++ {
		a[8+i] = byte(n >> (56 - 8*i))
	}
	return netip.AddrPortFrom(netip.AddrFrom16(a), 0)
}

// inbound is a datagram routed to a session.
type inbound struct {
	data []byte
	from netip.AddrPort
}

// vconn is the net.PacketConn a session's pion Conn reads from and writes to: reads come from
// the server's reader through a bounded queue, writes go straight to the shared socket.
type vconn struct {
	s      *Server
	ss     *session
	in     chan inbound
	closed chan struct{}
	once   sync.Once
	mute   atomic.Bool // drop writes: the session's state has been exported
	held   atomic.Bool // ReadFrom hands pion nothing more: the session is being handed over

	mu       sync.Mutex
	deadline time.Time
	wake     chan struct{}
	from     netip.AddrPort // source of the last datagram ReadFrom returned (guarded by mu)

	// ReadFrom calls begun, and datagrams returned: pion comes back to ReadFrom only after it
	// has processed the datagram before (see Server.peerAddr).
	entries, returned atomic.Uint64
}

// lastRead is the source of the last datagram handed to pion, and how many it has had.
func (v *vconn) lastRead() (netip.AddrPort, uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.from, v.returned.Load()
}

func newVconn(s *Server, ss *session, queue int) *vconn {
	return &vconn{s: s, ss: ss, in: make(chan inbound, queue), closed: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// deliver queues a copy of data; false if the session's queue is full or it is closed.
func (v *vconn) deliver(data []byte, from netip.AddrPort) bool {
	select {
	case <-v.closed:
		return false
	default:
	}
	select {
	case v.in <- inbound{data: append([]byte(nil), data...), from: from}:
		return true
	default:
		return false
	}
}

func (v *vconn) ReadFrom(b []byte) (int, net.Addr, error) {
	v.entries.Add(1)
	for {
		v.mu.Lock()
		dl := v.deadline
		v.mu.Unlock()
		var timeout <-chan time.Time
		var t *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t = time.NewTimer(d)
			timeout = t.C
		}
		in := v.in
		if v.held.Load() {
			in = nil
		}
		select {
		case p := <-in:
			stopTimer(t)
			n := copy(b, p.data)
			v.mu.Lock()
			v.from = p.from
			v.returned.Add(1)
			v.mu.Unlock()
			return n, net.UDPAddrFromAddrPort(p.from), nil
		case <-v.closed:
			stopTimer(t)
			return 0, nil, net.ErrClosed
		case <-v.wake:
			stopTimer(t)
		case <-timeout:
		}
	}
}

func (v *vconn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if v.mute.Load() {
		return len(b), nil
	}
	select {
	case <-v.closed:
		return 0, net.ErrClosed
	default:
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, &net.AddrError{Err: "not a UDP address", Addr: addr.String()}
	}
	ap := ua.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if cur := v.ss.addr.Load(); cur == nil || *cur != ap {
		// pion writes to a new address only after it authenticated a record from there
		// (RFC 9146 §6): follow the peer.
		v.s.moveSession(v.ss, ap)
	}
	return v.s.conn.WriteToUDPAddrPort(b, ap)
}

// hold makes ReadFrom hand pion no more datagrams (they stay in v.in).
func (v *vconn) hold() {
	v.held.Store(true)
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

// idle says whether pion has processed every datagram it took: it waits in ReadFrom again.
func (v *vconn) idle() bool { return v.entries.Load() > v.returned.Load() }

func (v *vconn) Close() error {
	v.once.Do(func() { close(v.closed) })
	return nil
}

func (v *vconn) LocalAddr() net.Addr { return v.s.conn.LocalAddr() }

func (v *vconn) SetDeadline(t time.Time) error { return v.SetReadDeadline(t) }

func (v *vconn) SetReadDeadline(t time.Time) error {
	v.mu.Lock()
	v.deadline = t
	v.mu.Unlock()
	select {
	case v.wake <- struct{}{}:
	default:
	}
	return nil
}

func (v *vconn) SetWriteDeadline(time.Time) error { return nil }

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// peerAddr is where a record just read from conn came from, as pion authenticated it: its
// remote address (RFC 9146 §6). pion moves that address to a Connection ID record's source
// only after handing the record over, so when the last datagram came from elsewhere the answer
// could go to the old address: wait (briefly) for pion to come back for its next datagram,
// which it does after the move. pion's address is used, never the datagram's own, which a
// forged record would set.
func (s *Server) peerAddr(conn *dtls.Conn, vc *vconn) netip.AddrPort {
	remote := func() netip.AddrPort {
		ua, _ := conn.RemoteAddr().(*net.UDPAddr)
		ap := ua.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	from, returned := vc.lastRead()
	if from == remote() {
		return from
	}
	for deadline := time.Now().Add(50 * time.Millisecond); vc.entries.Load() <= returned && time.Now().Before(deadline); {
		runtime.Gosched()
	}
	return remote()
}
