package coapserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config is the UDP transport's configuration.
type Config struct {
	Addr        string // listen address, e.g. ":5683"
	Sockets     int    // SO_REUSEPORT sockets, each with its own reader; default 1
	SocketBytes int    // SO_RCVBUF and SO_SNDBUF; default 8 MiB
	Batch       int    // datagrams per recvmmsg/sendmmsg; default 64
	MaxDatagram int    // the longest datagram taken; a longer CON request gets 4.13; default 16 KiB
	Exchange    Options
}

func (c *Config) defaults() {
	if c.Sockets <= 0 {
		c.Sockets = 1
	}
	if c.SocketBytes <= 0 {
		c.SocketBytes = 8 << 20
	}
	if c.Batch <= 0 {
		c.Batch = 64
	}
	if c.MaxDatagram <= 0 {
		c.MaxDatagram = 16 << 10
	}
}

// Server is the CoAP-over-UDP server: a fixed set of reader goroutines feeding an Endpoint and one
// sender goroutine writing its datagrams in batches.
type Server struct {
	cfg    Config
	log    *slog.Logger
	ep     *Endpoint
	conns  []*net.UDPConn
	out    *outQueue
	unlock func() // releases the port lock (lockPort); nil when not held

	wg       sync.WaitGroup // the sender
	readers  sync.WaitGroup
	mu       sync.Mutex
	started  bool
	closed   bool
	stopRead chan struct{}
}

// New builds a server; it does no I/O.
func New(cfg Config, h Handler, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	cfg.defaults()
	if cfg.Addr == "" {
		return nil, errors.New("coapserver: empty listen address")
	}
	if h == nil {
		return nil, errors.New("coapserver: nil handler")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, stopRead: make(chan struct{})}
	s.out = newOutQueue(cfg.Batch)
	s.ep = NewEndpoint(h, s.out, cfg.Exchange, log, NewMetrics(reg))
	if reg != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "coapgw_udp_receive_buffer_drops_total",
			Help: "Datagrams the kernel dropped because the CoAP sockets' receive buffers were full.",
		}, func() float64 { return float64(s.kernelDrops()) }))
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coapgw_coap_dedup_entries", Help: "(peer, MID) pairs remembered for deduplication.",
		}, func() float64 { return float64(s.ep.DedupEntries()) }))
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coapgw_coap_inflight_requests", Help: "Requests handed to the handler and not yet answered.",
		}, func() float64 { return float64(s.ep.Inflight()) }))
	}
	return s, nil
}

// Endpoint returns the exchange layer.
func (s *Server) Endpoint() *Endpoint { return s.ep }

// ErrPortServed is the error (wrapped) Listen returns when another gateway process, or another
// Server in this process, already serves the UDP port.
var ErrPortServed = errors.New("the port is already served by another coapgw process")

// Listen binds the sockets. It first takes a lock on the UDP port that the kernel releases when
// the process ends (lockPort; Linux only), so that a second gateway on a port another one serves
// refuses to start, whatever Sockets says: with Sockets > 1 the sockets carry SO_REUSEPORT, and
// the kernel would otherwise let the second gateway join the port and spread the devices over
// two processes, each with its own registry and deduplication. The lock is keyed on the port
// alone: ":5683", "0.0.0.0:5683" and "127.0.0.1:5683" overlap (the wildcard covers every
// address), and two gateways on distinct addresses with one port are refused too. A port held by
// a process that is no gateway fails the bind as before (EADDRINUSE). With port 0 the lock is
// taken on the port the kernel chose, after the first bind.
func (s *Server) Listen() error {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		return setSockopts(c, s.cfg.Sockets > 1, s.cfg.SocketBytes)
	}}
	addr := s.cfg.Addr
	port, err := ListenPort(addr)
	if err != nil {
		return fmt.Errorf("listen udp %s: %w", addr, err)
	}
	if port != 0 {
		if err := s.lock(addr, port); err != nil {
			return err
		}
	}
	for i := 0; i < s.cfg.Sockets; i++ {
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			s.closeConns()
			return fmt.Errorf("listen udp %s: %w", addr, err)
		}
		c := pc.(*net.UDPConn)
		s.conns = append(s.conns, c)
		if i == 0 {
			addr = c.LocalAddr().String() // later sockets join the port the first one got
			if port == 0 {
				if err := s.lock(addr, c.LocalAddr().(*net.UDPAddr).AddrPort().Port()); err != nil {
					s.closeConns()
					return err
				}
			}
		}
	}
	s.out.conn = s.conns[0]
	return nil
}

func (s *Server) lock(addr string, port uint16) error {
	unlock, err := LockPort("udp", addr, port)
	if err != nil {
		return err
	}
	s.unlock = unlock
	return nil
}

// LocalAddr is the bound address (after Listen).
func (s *Server) LocalAddr() netip.AddrPort {
	if len(s.conns) == 0 {
		return netip.AddrPort{}
	}
	return s.conns[0].LocalAddr().(*net.UDPAddr).AddrPort()
}

// Serve runs the readers and the sender. It returns when ctx ends or Shutdown or Close is
// called and the readers have stopped; responses still go out until Close.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if s.started || len(s.conns) == 0 {
		s.mu.Unlock()
		return errors.New("coapserver: Serve called twice or before Listen")
	}
	s.started = true
	s.mu.Unlock()
	s.ep.Start()
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.out.run(s.log) }()
	for _, c := range s.conns {
		s.readers.Go(func() { s.read(c) })
	}
	select {
	case <-ctx.Done():
		s.stopReading()
	case <-s.stopRead:
	}
	s.readers.Wait()
	return nil
}

// stopReading stops taking datagrams; responses still go out until Close.
func (s *Server) stopReading() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopRead:
		return
	default:
	}
	close(s.stopRead)
	for _, c := range s.conns {
		_ = c.SetReadDeadline(time.Unix(1, 0))
	}
}

// Close stops reading, sends what is queued, stops the timers and closes the sockets, without
// waiting for requests in flight (Shutdown does). Idempotent.
func (s *Server) Close() error {
	s.stopReading()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.ep.Stop()
	s.out.close()
	s.wg.Wait()
	s.closeConns()
	return nil
}

func (s *Server) closeConns() {
	for _, c := range s.conns {
		c.Close()
	}
	if s.unlock != nil {
		s.unlock()
		s.unlock = nil
	}
}

func (s *Server) read(c *net.UDPConn) {
	// One byte more than MaxDatagram per slot: a datagram that fills it was longer than we take,
	// and is handed over as oversized rather than cut short and read as if whole.
	r := newBatchReader(c, s.cfg.Batch, s.cfg.MaxDatagram+1)
	for {
		n, err := r.read()
		for i := 0; i < n; i++ {
			peer, data := r.datagram(i)
			if len(data) > s.cfg.MaxDatagram {
				s.ep.HandleOversized(peer, data)
				continue
			}
			s.ep.HandleDatagram(peer, data)
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) || isTimeout(err) {
				return
			}
			s.log.Warn("udp read", "err", err)
			runtime.Gosched()
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// outQueue collects datagrams from any goroutine and has one goroutine write them in batches.
type outQueue struct {
	conn  *net.UDPConn
	batch int

	mu     sync.Mutex
	cur    *outBatch
	spare  *outBatch
	wake   chan struct{}
	closed bool
	done   chan struct{}
}

type outBatch struct {
	arena []byte
	items []outItem
}

type outItem struct {
	peer     netip.AddrPort
	off, end int
}

// maxQueued bounds what waits for the sender: past it, datagrams are dropped (as a congested
// network would) rather than growing memory without bound.
const maxQueued = 1 << 16

func newOutQueue(batch int) *outQueue {
	return &outQueue{batch: batch, cur: &outBatch{}, spare: &outBatch{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// Send queues a copy of b for peer.
func (q *outQueue) Send(peer netip.AddrPort, b []byte) {
	q.mu.Lock()
	if q.closed || len(q.cur.items) >= maxQueued {
		q.mu.Unlock()
		return
	}
	off := len(q.cur.arena)
	q.cur.arena = append(q.cur.arena, b...)
	q.cur.items = append(q.cur.items, outItem{peer: peer, off: off, end: len(q.cur.arena)})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *outQueue) close() {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	q.mu.Unlock()
	close(q.done)
}

func (q *outQueue) run(log *slog.Logger) {
	w := newBatchWriter(q.conn, q.batch)
	for {
		var closing bool
		select {
		case <-q.wake:
		case <-q.done:
			closing = true
		}
		q.mu.Lock()
		b := q.cur
		q.cur, q.spare = q.spare, nil
		q.mu.Unlock()
		if err := w.write(b); err != nil && !errors.Is(err, net.ErrClosed) {
			log.Warn("udp write", "err", err)
		}
		b.arena, b.items = b.arena[:0], b.items[:0]
		q.mu.Lock()
		q.spare = b
		q.mu.Unlock()
		if closing {
			q.mu.Lock()
			last := q.cur
			q.mu.Unlock()
			_ = w.write(last) // anything queued between the swap and close
			return
		}
	}
}
