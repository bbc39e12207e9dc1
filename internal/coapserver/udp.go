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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgw/coapgw/internal/udpbatch"
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
	out    *udpbatch.Queue
	unlock func() // releases the port lock (lockPort); nil when not held

	wg       sync.WaitGroup // the sender
	readers  sync.WaitGroup
	mu       sync.Mutex
	started  bool
	closed   bool
	stopRead chan struct{}
	rcvBuf   atomic.Int64 // the receive buffer the kernel gave the first socket (receiveBuffer)
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
	s.out = udpbatch.NewQueue(cfg.Batch)
	s.ep = NewEndpoint(h, s.out, cfg.Exchange, log, NewMetrics(reg))
	if reg != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "coapgw_udp_receive_buffer_drops_total",
			Help: "Datagrams the kernel dropped because the CoAP sockets' receive buffers were full.",
		}, func() float64 { return float64(s.kernelDrops()) }))
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coapgw_udp_receive_buffer_bytes",
			Help: "Receive buffer the kernel gave each CoAP socket (SO_RCVBUF as asked for; below --socket-buffer when net.core.rmem_max caps it).",
		}, func() float64 { return float64(s.rcvBuf.Load()) }))
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
			s.checkBuffer(c)
			addr = c.LocalAddr().String() // later sockets join the port the first one got
			if port == 0 {
				if err := s.lock(addr, c.LocalAddr().(*net.UDPAddr).AddrPort().Port()); err != nil {
					s.closeConns()
					return err
				}
			}
		}
	}
	return nil
}

// checkBuffer records the receive buffer the kernel gave c and warns when it is smaller than
// configured: without CAP_NET_ADMIN (SO_RCVBUFFORCE) the kernel silently caps it at
// net.core.rmem_max, and a burst the configured size would absorb is dropped instead.
func (s *Server) checkBuffer(c *net.UDPConn) {
	got, ok := receiveBuffer(c)
	if !ok {
		return
	}
	s.rcvBuf.Store(int64(got))
	if got < s.cfg.SocketBytes {
		s.log.Warn("the CoAP socket's receive buffer is smaller than configured: the kernel capped it at net.core.rmem_max; bursts beyond it are dropped (coapgw_udp_receive_buffer_drops_total)",
			"configured_bytes", s.cfg.SocketBytes, "effective_bytes", got,
			"fix", fmt.Sprintf("sysctl -w net.core.rmem_max=%d net.core.wmem_max=%d (persist in /etc/sysctl.d/), or grant the process CAP_NET_ADMIN", s.cfg.SocketBytes, s.cfg.SocketBytes))
	}
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
// called and the readers have stopped; responses still go out until Close. After Shutdown or
// Close it returns nil at once, starting nothing.
//
// Serve starts its goroutines under s.mu, as stopReading (Shutdown, Close) takes it: a Shutdown
// or Close that overlaps Serve either comes first, and Serve starts nothing, or after, and waits
// for every goroutine Serve started (their WaitGroup.Add happened before its Wait).
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	select {
	case <-s.stopRead:
		s.mu.Unlock()
		return nil // shut down or closed before it started: nothing to serve
	default:
	}
	if s.started || len(s.conns) == 0 {
		s.mu.Unlock()
		return errors.New("coapserver: Serve called twice or before Listen")
	}
	s.started = true
	s.ep.Start()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.out.Run(s.conns[0], func(err error) { s.log.Warn("udp write", "err", err) })
	}()
	for _, c := range s.conns {
		s.readers.Go(func() { s.read(c) })
	}
	s.mu.Unlock()
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
	s.out.Close()
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
	r := udpbatch.NewReader(c, s.cfg.Batch, s.cfg.MaxDatagram+1)
	for {
		n, err := r.Read()
		for i := 0; i < n; i++ {
			peer, data := r.Datagram(i)
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
