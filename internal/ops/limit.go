package ops

import (
	"net"
	"os"
	"sync"
)

// FDReserve is how many file descriptors the HTTP server leaves to the rest of the process
// under RLIMIT_NOFILE, beyond those open when it starts listening: what the spool opens per
// operation (cursor.tmp and the directory on every cursor write, a new segment file and its
// directory sync on every roll, the reader's segment), the local registry's and the AWS
// clients' files and connections, and slack. HTTP load therefore cannot make an append fail
// with "too many open files".
const FDReserve = 32

// connLimit is the cap on open HTTP connections: want, lowered so that inUse descriptors, one
// per connection and reserve still fit under limit (0: no limit known). It is at least 1.
func connLimit(want int, limit uint64, inUse, reserve int) int {
	if limit == 0 || limit > 1<<30 {
		return want
	}
	budget := int(limit) - inUse - reserve
	return min(want, max(1, budget))
}

// openFDs counts the process's open descriptors (0 where the system does not say).
func openFDs() int {
	for _, dir := range []string{"/proc/self/fd", "/dev/fd"} {
		f, err := os.Open(dir)
		if err != nil {
			continue
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err == nil {
			return len(names) - 1 // the directory itself, open while listing
		}
	}
	return 0
}

// limitListener accepts at most n connections at once: Accept waits while n are open, and the
// kernel's listen backlog holds the rest, costing the process no descriptor.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// open is how many accepted connections are not closed yet.
func (l *limitListener) open() int { return len(l.sem) }

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
