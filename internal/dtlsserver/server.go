package dtlsserver

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/udpbatch"
)

// Server is the CoAP-over-DTLS server: one UDP socket, one reader goroutine routing datagrams
// to sessions, and per session a pion/dtls Conn and the goroutine that hands its decrypted
// datagrams to the Endpoint.
type Server struct {
	cfg  Config
	log  *slog.Logger
	m    *metrics
	ep   *coapserver.Endpoint
	opts []dtls.Option
	conn *net.UDPConn

	mu          sync.RWMutex
	byKey       map[netip.AddrPort]*session
	byAddr      map[netip.AddrPort]*session
	byCID       map[string]*session
	handshaking int
	established int
	nextNum     uint64

	wg         sync.WaitGroup // sessions and the janitor
	lmu        sync.Mutex
	started    bool
	shut       bool
	stop       chan struct{} // closed by Shutdown
	readDone   chan struct{} // closed when the reader has stopped (Serve started)
	cookies    *cookieJar    // cookie.go; the reader's
	loaded     []savedSession
	hibernated atomic.Int64
	disp       dispatchers     // dispatch.go
	out        *udpbatch.Queue // the record layer's records, written in batches
	outDone    chan struct{}   // closed when out's writer has returned
}

var _ coapserver.Sender = (*Server)(nil)

// New builds a server; it does no I/O. exchange tunes its own Endpoint (deduplication and
// retransmission work per session). The exchange layer's metrics are registered with reg under
// the prefix "dtls_" (dtls_coapgw_coap_datagrams_total, ...), apart from plain CoAP's.
func New(cfg Config, h coapserver.Handler, exchange coapserver.Options, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("dtls: nil handler")
	}
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: cfg, log: log,
		byKey: make(map[netip.AddrPort]*session), byAddr: make(map[netip.AddrPort]*session), byCID: make(map[string]*session),
		stop: make(chan struct{}), readDone: make(chan struct{}), cookies: newCookieJar(time.Now),
	}
	s.m = newMetrics(reg, s)
	var epReg prometheus.Registerer
	if reg != nil {
		epReg = prometheus.WrapRegistererWithPrefix("dtls_", reg)
	}
	s.ep = coapserver.NewEndpoint(h, s, exchange, log, coapserver.NewMetrics(epReg))
	s.opts = []dtls.Option{ // and the PSK hook, per session (pskOption)
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
		dtls.WithLoggerFactory(pionLog{log}), // pionlog.go
	}
	return s, nil
}

// Endpoint returns the exchange layer.
func (s *Server) Endpoint() *coapserver.Endpoint { return s.ep }

// Listen binds the socket and, if Config.StateFile names one, loads the sessions saved there by
// a previous Shutdown and removes the file.
func (s *Server) Listen() error {
	pc, err := (&net.ListenConfig{}).ListenPacket(context.Background(), "udp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen dtls %s: %w", s.cfg.Addr, err)
	}
	s.conn = pc.(*net.UDPConn)
	s.out = udpbatch.NewQueue(readBatch)
	_ = s.conn.SetReadBuffer(socketBytes) // best effort: the sysctl may cap it
	_ = s.conn.SetWriteBuffer(socketBytes)
	if s.cfg.StateFile != "" {
		saved, err := loadState(s.cfg.StateFile)
		if err != nil {
			s.log.Warn("dtls sessions not restored", "file", s.cfg.StateFile, "err", err)
		}
		s.loaded = saved
	}
	return nil
}

// LocalAddr is the bound address (after Listen).
func (s *Server) LocalAddr() netip.AddrPort {
	if s.conn == nil {
		return netip.AddrPort{}
	}
	return s.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Serve resumes the loaded sessions and routes datagrams until ctx ends or Shutdown is called.
// After Shutdown it returns nil at once, starting nothing.
//
// Everything Serve sets up (outDone, the dispatchers, the restored sessions, the janitor's
// s.wg.Add, the reader) is done under s.lmu, which Shutdown takes first: a Shutdown that
// overlaps Serve either comes before, and Serve starts nothing, or after, and finds it all set
// up, without relying on readDone alone to order it.
func (s *Server) Serve(ctx context.Context) error {
	s.lmu.Lock()
	if s.shut {
		s.lmu.Unlock()
		return nil // shut down before it started: nothing to serve
	}
	if s.started || s.conn == nil {
		s.lmu.Unlock()
		return errors.New("dtls: Serve called twice or before Listen")
	}
	s.started = true
	loaded := s.loaded
	s.loaded = nil
	s.setUp(loaded)
	s.lmu.Unlock()
	select {
	case <-ctx.Done():
	case <-s.stop:
	}
	_ = s.conn.SetReadDeadline(time.Unix(1, 0))
	<-s.readDone
	return nil
}

// setUp starts what Serve runs and resumes the loaded sessions; s.lmu is held.
func (s *Server) setUp(loaded []savedSession) {
	s.ep.Start()
	s.outDone = make(chan struct{})
	go func() {
		defer close(s.outDone)
		s.out.Run(s.conn, func(err error) { s.log.Debug("dtls write", "err", err) })
	}()
	s.startDispatch()
	s.restore(loaded)
	s.wg.Add(1)
	go s.janitor()
	go func() { defer close(s.readDone); s.read() }()
}

// Shutdown stops reading, lets requests in flight be answered (until ctx ends), saves the
// established sessions to Config.StateFile, and closes every session and the socket. Saved
// sessions are not told of the close: they continue with the next process. Idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.lmu.Lock()
	if s.shut {
		s.lmu.Unlock()
		return nil
	}
	s.shut = true
	started, loaded := s.started, s.loaded
	close(s.stop)
	s.lmu.Unlock()
	if s.conn == nil {
		return nil
	}
	if !started && s.cfg.StateFile != "" && len(loaded) > 0 {
		// Loaded, never served: keep them for the next start.
		err := s.save(loaded)
		s.conn.Close()
		return err
	}
	_ = s.conn.SetReadDeadline(time.Unix(1, 0))
	if started {
		<-s.readDone // no session starts or wakes after this
		s.drainDispatch(ctx)
		_ = s.ep.WaitIdle(ctx) // at ctx's end the rest go unanswered, as on the UDP server
		s.ep.Stop()
	}
	s.mu.RLock()
	all := make([]*session, 0, len(s.byKey))
	for _, ss := range s.byKey {
		all = append(all, ss)
	}
	s.mu.RUnlock()
	saved, conns := s.export(all)
	var err error
	if s.cfg.StateFile != "" {
		err = s.save(saved)
	}
	for _, c := range conns {
		_ = c.Close() // muted: not even close_notify goes out
	}
	s.wg.Wait()
	s.stopDispatch()
	s.out.Close()
	if s.outDone != nil {
		<-s.outDone
	}
	s.conn.Close()
	return err
}

// socketBytes is the socket's receive and send buffer: bursts of handshakes wait there.
const socketBytes = 4 << 20

// DTLS record layer (RFC 6347 §4.1, RFC 9146 §4): type(1) version(2) epoch(2) seq(6) [cid]
// length(2); a handshake record's body starts with the handshake type.
const (
	recordHeaderLen      = 13
	contentHandshake     = 22
	contentTLS12CID      = 25
	handshakeClientHi    = 1
	handshakeServerHello = 2
	epochOffset          = 3
	cidOffset            = 11
	handshakeTypeIndex   = recordHeaderLen
)

// isClientHello says whether data starts with an epoch-0 handshake record carrying a
// ClientHello: the only datagram that may start a session, once it carries a valid cookie.
func isClientHello(data []byte) bool {
	return len(data) > handshakeTypeIndex && data[0] == contentHandshake &&
		data[epochOffset] == 0 && data[epochOffset+1] == 0 && data[handshakeTypeIndex] == handshakeClientHi
}

// route hands a datagram to its session: by Connection ID for a tls12_cid record, else by the
// address it came from. An epoch-0 ClientHello without a valid cookie is answered with a
// HelloVerifyRequest and nothing else (cookie.go); only one with a valid cookie from an address
// without a session (or whose session is established: the device restarted) starts a new one.
// now is when the reader got the datagram (UnixNano; one clock read per recvmmsg batch).
func (s *Server) route(data []byte, from netip.AddrPort, now int64) {
	if len(data) < recordHeaderLen {
		s.m.disp(dispShort)
		return
	}
	if data[0] == contentTLS12CID {
		if len(data) < recordHeaderLen+cidLen {
			s.m.disp(dispShort)
			return
		}
		s.mu.RLock()
		ss := s.byCID[string(data[cidOffset:cidOffset+cidLen])]
		s.mu.RUnlock()
		if ss == nil {
			s.m.disp(dispUnknownCID)
			return
		}
		s.deliver(ss, data, from, now)
		return
	}
	s.mu.RLock()
	ss := s.byAddr[from]
	s.mu.RUnlock()
	hello := isClientHello(data)
	var ch helloFields
	if hello {
		var ok bool
		if ch, ok = s.verifyHello(data, from); !ok {
			return
		}
	}
	if ss != nil && !(hello && ss.est.Load()) {
		s.deliver(ss, data, from, now)
		return
	}
	if !hello {
		s.m.disp(dispUnknownPeer)
		return
	}
	s.startSession(data, from, ch)
}

// newCID returns a Connection ID no session has; s.mu is held.
func (s *Server) newCID() string {
	var b [cidLen]byte
	for {
		_, _ = rand.Read(b[:])
		if _, taken := s.byCID[string(b[:])]; !taken {
			return string(b[:])
		}
	}
}

// newSession registers a session for addr with its own key and Connection ID; s.mu is held.
func (s *Server) newSession(addr netip.AddrPort, cid string) *session {
	s.nextNum++
	ss := &session{num: s.nextNum, key: sessionKey(s.nextNum), cid: cid}
	ss.addr.Store(&addr)
	ss.last.Store(time.Now().UnixNano())
	s.byKey[ss.key], s.byAddr[addr], s.byCID[cid] = ss, ss, ss
	return ss
}

func (s *Server) connOptions(ss *session) []dtls.ServerOption {
	opts := make([]dtls.ServerOption, 0, len(s.opts)+2)
	for _, o := range s.opts {
		opts = append(opts, o)
	}
	cid := ss.cid
	return append(opts, s.pskOption(ss), dtls.WithConnectionIDGenerator(func() []byte { return []byte(cid) }))
}

// startSession starts the handshake of a ClientHello whose cookie verifyHello accepted: a pion
// Conn that continues from it (dtls.WithHelloVerified), unless MaxHandshakes are in progress.
func (s *Server) startSession(hello []byte, from netip.AddrPort, ch helloFields) {
	s.mu.Lock()
	if s.handshaking >= s.cfg.MaxHandshakes {
		s.mu.Unlock()
		s.m.disp(dispHandshakesFull)
		return
	}
	prev := s.byAddr[from]
	ss := s.newSession(from, s.newCID())
	if prev != nil && prev.est.Load() {
		ss.prev = prev
	}
	vc := newVconn(s, ss, s.cfg.SessionQueue)
	opts := append(s.connOptions(ss), dtls.WithHelloVerified(ch.messageSeq, ch.recordSeq))
	conn, err := dtls.ServerWithOptions(vc, net.UDPAddrFromAddrPort(from), opts...)
	if err != nil {
		s.unregister(ss)
		s.mu.Unlock()
		s.log.Error("dtls server conn", "err", err)
		return
	}
	ss.mu.Lock()
	ss.conn, ss.vc = conn, vc
	ss.mu.Unlock()
	s.handshaking++
	s.wg.Add(1)
	s.mu.Unlock()
	s.m.disp(dispHello)
	vc.deliver(hello, from)
	go s.runSession(ss, conn, vc, false)
}

// unregister removes ss from the indexes that still point to it; s.mu is held. It reports
// whether ss was still registered.
func (s *Server) unregister(ss *session) bool {
	if s.byKey[ss.key] != ss {
		return false
	}
	delete(s.byKey, ss.key)
	if a := ss.addr.Load(); a != nil && s.byAddr[*a] == ss {
		if p := ss.prev; p != nil && s.byKey[p.key] == p {
			s.byAddr[*a] = p // a handshake that failed does not take the address from a session
		} else {
			delete(s.byAddr, *a)
		}
	}
	if s.byCID[ss.cid] == ss {
		delete(s.byCID, ss.cid)
	}
	return true
}

// sessionEnded is called when conn, a Conn of ss, has stopped. Unless ss went on without it
// (hibernated, or woken with another), ss is gone.
func (s *Server) sessionEnded(ss *session, conn *dtls.Conn) {
	ss.mu.Lock()
	current := ss.conn == conn && !ss.gone
	if current {
		ss.gone, ss.conn, ss.vc = true, nil, nil
	}
	ss.mu.Unlock()
	if current {
		s.remove(ss)
	}
	_ = conn.Close()
}

// remove unregisters a gone session and uncounts it.
func (s *Server) remove(ss *session) {
	s.mu.Lock()
	if s.unregister(ss) {
		if ss.est.Load() {
			s.established--
		} else {
			s.handshaking--
		}
	}
	s.mu.Unlock()
}

// moveSession points addr at ss after pion accepted a record of ss from there.
func (s *Server) moveSession(ss *session, addr netip.AddrPort) {
	s.mu.Lock()
	if old := ss.addr.Load(); old != nil && s.byAddr[*old] == ss {
		delete(s.byAddr, *old)
	}
	if s.byKey[ss.key] == ss {
		s.byAddr[addr] = ss
	}
	ss.addr.Store(&addr)
	s.mu.Unlock()
}

// runSession runs one Conn of ss: the handshake unless resumed, then hands every decrypted
// datagram to the exchange layer until the Conn stops.
func (s *Server) runSession(ss *session, conn *dtls.Conn, vc *vconn, resumed bool) {
	defer s.wg.Done()
	defer s.sessionEnded(ss, conn)
	if !resumed {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.HandshakeTimeout)
		err := conn.HandshakeContext(ctx)
		cancel()
		if err != nil {
			switch {
			case ss.evicted.Load():
				s.m.handshake(resultDisplaced)
			case errors.Is(err, context.DeadlineExceeded):
				s.m.handshake(resultTimeout)
			case errors.Is(err, net.ErrClosed):
				s.m.handshake(resultAborted)
			default:
				s.m.handshake(resultFailed)
			}
			s.log.Debug("dtls handshake", "peer", ss.addr.Load(), "err", err)
			return
		}
		st, _ := conn.ConnectionState()
		ss.identity = string(st.IdentityHint)
		s.m.handshake(resultOK)
		s.promote(ss)
	}
	b := s.disp.bufs.Get().(*[]byte) // enqueue copies what it keeps
	defer s.disp.bufs.Put(b)
	buf := (*b)[:cap(*b)]
	slots := make(chan struct{}, dispatchPerSession)
	for {
		n, err := conn.Read(buf)
		var temp *dtls.TemporaryError
		if errors.As(err, &temp) {
			continue // a record pion dropped (e.g. longer than buf): the session goes on
		}
		if err != nil {
			return
		}
		addr := s.peerAddr(conn, vc)
		if s.handover(ss, conn, vc, buf[:n], addr) {
			return // the session goes on in the record layer (fastpath.go)
		}
		s.enqueue(ss, addr, buf[:n], slots)
	}
}

// promote counts ss as established; past MaxSessions the least recently active other session
// is evicted.
func (s *Server) promote(ss *session) {
	s.mu.Lock()
	var victims []*session
	if s.byKey[ss.key] == ss {
		ss.est.Store(true)
		ss.prev = nil // the device's new session replaces the one it had at this address
		s.handshaking--
		s.established++
		if s.established > s.cfg.MaxSessions {
			victims = s.leastRecent(ss, max(1, s.cfg.MaxSessions/100))
		}
	}
	s.mu.Unlock()
	for _, v := range victims {
		s.evict(v, evictCap)
	}
}

// leastRecent returns the n least recently active established sessions other than ss; s.mu
// is held. Evicting a hundredth of MaxSessions at a time keeps the scan off most handshakes.
func (s *Server) leastRecent(ss *session, n int) []*session {
	all := make([]*session, 0, len(s.byKey))
	for _, o := range s.byKey {
		if o != ss && o.est.Load() && !o.evicted.Load() {
			all = append(all, o)
		}
	}
	if len(all) > n {
		slices.SortFunc(all, func(a, b *session) int { return cmp.Compare(a.last.Load(), b.last.Load()) })
		all = all[:n]
	}
	return all
}

// Sessions is the number of established sessions and of handshakes in progress.
func (s *Server) Sessions() (established, handshaking int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.established, s.handshaking
}
