package dtlsserver

import (
	"context"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The sessions' goroutines do not call the exchange layer themselves: each queues its decrypted
// datagrams to a dispatcher (one per GOMAXPROCS, a session always to the same one, so its
// datagrams keep their order), which hands them on in bursts, as the plain CoAP reader does with
// a recvmmsg batch. Called from thousands of session goroutines one datagram at a time, the
// handler's work behind them came in ones too: the spool woke for every record and committed
// batches of a few, and with GOMAXPROCS=1 each fsync held the only P (the runtime does not take
// it back from a short syscall), so the server idled at 2,000 sessions while requests waited.
// A dispatcher that wakes first yields (runtime.Gosched), so that the other sessions' goroutines
// queue theirs, then hands on everything queued: the records of one burst reach the spool
// together and go out in one commit.

// dispatchPerSession is how many datagrams of one session may wait in its dispatcher: its
// goroutine blocks past that (and its pion Conn's queue fills, then the reader drops).
const dispatchPerSession = 4

// queued is a decrypted datagram waiting for its dispatcher.
type queued struct {
	ss        *session
	key, addr netip.AddrPort
	identity  string
	data      *[]byte
	slots     chan struct{} // the session's: released once handed on
}

type dispatcher struct {
	mu    sync.Mutex
	queue []queued
	spare []queued
	idle  bool          // waiting on wake; the next push signals it
	wake  chan struct{} // capacity 1
}

// dispatchers is the set a server starts in Serve.
type dispatchers struct {
	ds      []*dispatcher
	pending atomic.Int64 // queued and not yet handed on
	bufs    sync.Pool
	quit    chan struct{}
	wg      sync.WaitGroup
}

// startDispatch starts one dispatcher per GOMAXPROCS.
func (s *Server) startDispatch() {
	n := max(1, runtime.GOMAXPROCS(0))
	size := s.cfg.MaxDatagram
	s.disp.bufs.New = func() any { b := make([]byte, 0, size); return &b }
	s.disp.quit = make(chan struct{})
	for range n {
		d := &dispatcher{idle: true, wake: make(chan struct{}, 1)}
		s.disp.ds = append(s.disp.ds, d)
		s.disp.wg.Add(1)
		go s.dispatch(d)
	}
}

// stopDispatch ends the dispatchers once nothing can queue more (every session has ended).
func (s *Server) stopDispatch() {
	if s.disp.quit == nil {
		return
	}
	close(s.disp.quit)
	s.disp.wg.Wait()
}

// drainDispatch waits until every queued datagram has been handed on, or ctx ends.
func (s *Server) drainDispatch(ctx context.Context) {
	for s.disp.pending.Load() > 0 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
}

// enqueue queues a copy of data, read from ss's Conn, for the exchange layer; slots bounds how
// many of the session's wait (nil: no bound, for the records of ss's record layer that must
// wait behind those queued before: fastpath.go).
func (s *Server) enqueue(ss *session, addr netip.AddrPort, data []byte, slots chan struct{}) {
	if slots != nil {
		slots <- struct{}{}
	}
	ss.queued.Add(1)
	b := s.disp.bufs.Get().(*[]byte)
	*b = append((*b)[:0], data...)
	d := s.disp.ds[ss.num%uint64(len(s.disp.ds))]
	s.disp.pending.Add(1)
	d.mu.Lock()
	d.queue = append(d.queue, queued{ss: ss, key: ss.key, addr: addr, identity: ss.identity, data: b, slots: slots})
	signal := d.idle
	d.idle = false
	d.mu.Unlock()
	if signal {
		d.wake <- struct{}{}
	}
}

func (s *Server) dispatch(d *dispatcher) {
	defer s.disp.wg.Done()
	for {
		select {
		case <-d.wake:
		case <-s.disp.quit:
			s.handOn(d) // nothing is queued after quit; this empties what was
			return
		}
		runtime.Gosched() // let the other sessions queue theirs first
		s.handOn(d)
	}
}

// handOn hands everything queued in d to the exchange layer, until d is empty; d is idle after.
func (s *Server) handOn(d *dispatcher) {
	for {
		d.mu.Lock()
		q := d.queue
		if len(q) == 0 {
			d.idle = true
			d.mu.Unlock()
			return
		}
		d.queue, d.spare = d.spare[:0], nil
		d.mu.Unlock()
		for i := range q {
			r := &q[i]
			s.ep.HandleSession(r.key, r.addr, r.identity, *r.data)
			s.disp.bufs.Put(r.data)
			if r.slots != nil {
				<-r.slots
			}
			r.ss.queued.Add(-1)
			s.disp.pending.Add(-1)
			*r = queued{}
		}
		d.mu.Lock()
		d.spare = q[:0]
		d.mu.Unlock()
	}
}
