package coapserver

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func setSockopts(c syscall.RawConn, reuseport bool, bufBytes int) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if reuseport {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
				return
			}
		}
		// SO_*BUFFORCE lifts net.core.rmem_max for root; fall back to the capped call otherwise.
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bufBytes) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, bufBytes)
		}
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, bufBytes) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, bufBytes)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// batchReader reads up to n datagrams per recvmmsg(2) call.
type batchReader struct {
	rc    syscall.RawConn
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	bufs  []byte
	size  int
	got   int
	err   error
	fn    func(fd uintptr) bool
}

func newBatchReader(c *net.UDPConn, n, size int) *batchReader {
	rc, _ := c.SyscallConn()
	r := &batchReader{rc: rc, hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n), bufs: make([]byte, n*size), size: size}
	for i := range r.hdrs {
		r.iovs[i].Base = &r.bufs[i*size]
		r.iovs[i].SetLen(size)
		r.hdrs[i].Hdr.Iov = &r.iovs[i]
		r.hdrs[i].Hdr.Iovlen = 1
		r.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	r.fn = func(fd uintptr) bool {
		for i := range r.hdrs {
			r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
			r.hdrs[i].Hdr.Flags = 0
		}
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		if errno == unix.EAGAIN || errno == unix.EINTR {
			return false
		}
		if errno != 0 {
			r.got, r.err = 0, errno
			return true
		}
		r.got, r.err = int(n), nil
		return true
	}
	return r
}

func (r *batchReader) read() (int, error) {
	if err := r.rc.Read(r.fn); err != nil {
		return 0, err
	}
	return r.got, r.err
}

func (r *batchReader) datagram(i int) (netip.AddrPort, []byte) {
	n := int(r.hdrs[i].Len)
	if n > r.size {
		n = r.size
	}
	return sockaddrToAddrPort(&r.names[i]), r.bufs[i*r.size : i*r.size+n]
}

func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// batchWriter writes datagrams with sendmmsg(2).
type batchWriter struct {
	rc    syscall.RawConn
	v6    bool
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	n     int
	sent  int
	err   error
	fn    func(fd uintptr) bool
}

func newBatchWriter(c *net.UDPConn, n int) *batchWriter {
	rc, _ := c.SyscallConn()
	w := &batchWriter{rc: rc, hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n), names: make([]unix.RawSockaddrInet6, n)}
	w.v6 = !c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Is4()
	for i := range w.hdrs {
		w.hdrs[i].Hdr.Iov = &w.iovs[i]
		w.hdrs[i].Hdr.Iovlen = 1
		w.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&w.names[i]))
	}
	w.fn = func(fd uintptr) bool {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.hdrs[w.sent])), uintptr(w.n-w.sent), 0, 0, 0)
		if errno == unix.EAGAIN || errno == unix.EINTR {
			return false
		}
		if errno != 0 {
			// Skip the datagram that failed (e.g. EHOSTUNREACH for one peer) and go on.
			w.err = errno
			w.sent++
			return true
		}
		w.sent += int(n)
		return true
	}
	return w
}

func (w *batchWriter) fill(i int, peer netip.AddrPort, b []byte) {
	w.iovs[i].Base = &b[0]
	w.iovs[i].SetLen(len(b))
	sa := &w.names[i]
	port := peer.Port()
	if w.v6 {
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: peer.Addr().As16()}
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		w.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
	} else {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: peer.Addr().Unmap().As4()}
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		w.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
	}
}

func (w *batchWriter) write(b *outBatch) error {
	var firstErr error
	for start := 0; start < len(b.items); start += len(w.hdrs) {
		end := min(start+len(w.hdrs), len(b.items))
		w.n, w.sent = 0, 0
		for _, it := range b.items[start:end] {
			if it.end == it.off {
				continue
			}
			w.fill(w.n, it.peer, b.arena[it.off:it.end])
			w.n++
		}
		for w.sent < w.n {
			w.err = nil
			if err := w.rc.Write(w.fn); err != nil {
				return err
			}
			if w.err != nil && firstErr == nil {
				firstErr = w.err
			}
		}
	}
	return firstErr
}

// kernelDrops sums the drops column of /proc/net/udp{,6} for the server's sockets' port.
func (s *Server) kernelDrops() uint64 {
	if len(s.conns) == 0 {
		return 0
	}
	port := fmt.Sprintf(":%04X", s.LocalAddr().Port())
	var total uint64
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 13 || !strings.HasSuffix(fields[1], port) {
				continue
			}
			if d, err := strconv.ParseUint(fields[len(fields)-1], 10, 64); err == nil {
				total += d
			}
		}
		fh.Close()
	}
	return total
}
