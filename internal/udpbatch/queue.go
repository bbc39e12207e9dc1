package udpbatch

import (
	"errors"
	"net"
	"net/netip"
	"sync"
)

// Queue collects datagrams from any goroutine; Run writes them in batches.
type Queue struct {
	batch int

	mu     sync.Mutex
	cur    *batch
	spare  *batch
	wake   chan struct{}
	held   int  // Hold calls not yet Released
	later  bool // a Send while held: Release wakes Run
	closed bool
	done   chan struct{}
}

type batch struct {
	arena []byte
	items []item
}

type item struct {
	peer     netip.AddrPort
	off, end int
}

// MaxQueued bounds what waits for Run: past it datagrams are dropped, as a congested network
// would, rather than growing memory without bound.
const MaxQueued = 1 << 16

// NewQueue makes a queue whose Run writes n datagrams per system call at most.
func NewQueue(n int) *Queue {
	return &Queue{batch: max(1, n), cur: &batch{}, spare: &batch{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// Send queues a copy of b for peer; it is dropped if MaxQueued wait or the queue is closed.
func (q *Queue) Send(peer netip.AddrPort, b []byte) {
	q.mu.Lock()
	if q.closed || len(q.cur.items) >= MaxQueued {
		q.mu.Unlock()
		return
	}
	off := len(q.cur.arena)
	q.cur.arena = append(q.cur.arena, b...)
	q.cur.items = append(q.cur.items, item{peer: peer, off: off, end: len(q.cur.arena)})
	held := q.held > 0
	q.later = q.later || held
	q.mu.Unlock()
	if !held {
		q.signal()
	}
}

// Hold makes Send only queue, without waking Run, until the matching Release: a goroutine that
// answers a batch of datagrams holds the queue meanwhile, and its answers go out together, with
// one wake-up of Run and as few sendmmsg(2) calls as the batch size allows, rather than one
// each. Holds nest; every Hold needs its Release, and other goroutines' datagrams wait too.
func (q *Queue) Hold() {
	q.mu.Lock()
	q.held++
	q.mu.Unlock()
}

// Release ends a Hold; the last one wakes Run if something was queued meanwhile.
func (q *Queue) Release() {
	q.mu.Lock()
	q.held--
	wake := q.held == 0 && q.later
	if wake {
		q.later = false
	}
	q.mu.Unlock()
	if wake {
		q.signal()
	}
}

func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Close makes Run write what is queued and return. Idempotent.
func (q *Queue) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.done)
	}
}

// Run writes the queued datagrams to c until Close; errors other than a closed socket go to
// onErr (may be nil).
func (q *Queue) Run(c *net.UDPConn, onErr func(error)) {
	w := newWriter(c, q.batch)
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
		if closing {
			q.cur = &batch{} // nothing more comes: Send sees closed
		}
		q.mu.Unlock()
		if err := w.write(b); err != nil && !errors.Is(err, net.ErrClosed) && onErr != nil {
			onErr(err)
		}
		if closing {
			return
		}
		b.arena, b.items = b.arena[:0], b.items[:0]
		q.mu.Lock()
		q.spare = b
		q.mu.Unlock()
	}
}
