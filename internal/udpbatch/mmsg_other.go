//go:build !linux

package udpbatch

import (
	"net"
	"net/netip"
)

// Reader reads one datagram per call where recvmmsg(2) is missing.
type Reader struct {
	c    *net.UDPConn
	buf  []byte
	n    int
	from netip.AddrPort
}

// NewReader reads from c into a buffer of size bytes (n is ignored).
func NewReader(c *net.UDPConn, n, size int) *Reader {
	_ = c.SetReadBuffer(8 << 20) // best effort: one read per datagram wants room
	return &Reader{c: c, buf: make([]byte, size)}
}

// Read waits for a datagram.
func (r *Reader) Read() (int, error) {
	n, from, err := r.c.ReadFromUDPAddrPort(r.buf)
	if err != nil {
		return 0, err
	}
	r.n, r.from = n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	return 1, nil
}

// Datagram is the datagram of the last Read.
func (r *Reader) Datagram(int) (netip.AddrPort, []byte) { return r.from, r.buf[:r.n] }

type writer struct{ c *net.UDPConn }

func newWriter(c *net.UDPConn, _ int) *writer { return &writer{c: c} }

func (w *writer) write(b *batch) error {
	var first error
	for _, it := range b.items {
		if _, err := w.c.WriteToUDPAddrPort(b.arena[it.off:it.end], it.peer); err != nil && first == nil {
			first = err
		}
	}
	return first
}
