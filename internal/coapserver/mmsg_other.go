//go:build !linux

package coapserver

import (
	"net"
	"net/netip"
	"syscall"
)

// Portable fallback: one datagram per system call.

func setSockopts(c syscall.RawConn, reuseport bool, bufBytes int) error { return nil }

type batchReader struct {
	c    *net.UDPConn
	buf  []byte
	n    int
	peer netip.AddrPort
	size int
}

func newBatchReader(c *net.UDPConn, _ int, size int) *batchReader {
	_ = c.SetReadBuffer(8 << 20)
	return &batchReader{c: c, buf: make([]byte, size), size: size}
}

func (r *batchReader) read() (int, error) {
	n, peer, err := r.c.ReadFromUDPAddrPort(r.buf)
	if err != nil {
		return 0, err
	}
	r.n, r.peer = n, netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	return 1, nil
}

func (r *batchReader) datagram(int) (netip.AddrPort, []byte) { return r.peer, r.buf[:r.n] }

type batchWriter struct{ c *net.UDPConn }

func newBatchWriter(c *net.UDPConn, _ int) *batchWriter { return &batchWriter{c: c} }

func (w *batchWriter) write(b *outBatch) error {
	var first error
	for _, it := range b.items {
		if _, err := w.c.WriteToUDPAddrPort(b.arena[it.off:it.end], it.peer); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (s *Server) kernelDrops() uint64 { return 0 }
