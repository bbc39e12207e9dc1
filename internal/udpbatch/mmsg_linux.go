package udpbatch

import (
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reader reads up to n datagrams per recvmmsg(2) call.
type Reader struct {
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

// NewReader reads from c into n buffers of size bytes each: a datagram that fills its buffer
// may have been longer (give size one byte more than the longest datagram taken).
func NewReader(c *net.UDPConn, n, size int) *Reader {
	rc, _ := c.SyscallConn()
	r := &Reader{rc: rc, hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n), bufs: make([]byte, n*size), size: size}
	for i := range r.hdrs {
		r.iovs[i].Base = &r.bufs[i*size]
		r.iovs[i].SetLen(size)
		r.hdrs[i].Hdr.Iov, r.hdrs[i].Hdr.Iovlen = &r.iovs[i], 1
		r.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	}
	r.fn = func(fd uintptr) bool {
		for i := range r.hdrs {
			r.hdrs[i].Hdr.Namelen, r.hdrs[i].Hdr.Flags = unix.SizeofSockaddrInet6, 0
		}
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case unix.EAGAIN, unix.EINTR:
			return false
		case 0:
			r.got, r.err = int(n), nil
		default:
			r.got, r.err = 0, errno
		}
		return true
	}
	return r
}

// Read waits for datagrams and returns how many it read (Datagram(0..n-1)).
func (r *Reader) Read() (int, error) {
	if err := r.rc.Read(r.fn); err != nil {
		return 0, err
	}
	return r.got, r.err
}

// Datagram is the i-th datagram of the last Read and where it came from; its bytes stay valid,
// and may be modified, until the next Read.
func (r *Reader) Datagram(i int) (netip.AddrPort, []byte) {
	n := min(int(r.hdrs[i].Len), r.size)
	return fromSockaddr(&r.names[i]), r.bufs[i*r.size : i*r.size+n]
}

func fromSockaddr(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := func(p *uint16) uint16 { b := (*[2]byte)(unsafe.Pointer(p)); return uint16(b[0])<<8 | uint16(b[1]) }
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port(&sa4.Port))
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port(&sa.Port))
	}
	return netip.AddrPort{}
}

// writer writes batches with sendmmsg(2).
type writer struct {
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

func newWriter(c *net.UDPConn, n int) *writer {
	rc, _ := c.SyscallConn()
	w := &writer{rc: rc, hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n), names: make([]unix.RawSockaddrInet6, n)}
	w.v6 = !c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Is4()
	for i := range w.hdrs {
		w.hdrs[i].Hdr.Iov, w.hdrs[i].Hdr.Iovlen = &w.iovs[i], 1
		w.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&w.names[i]))
	}
	w.fn = func(fd uintptr) bool {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.hdrs[w.sent])), uintptr(w.n-w.sent), 0, 0, 0)
		switch errno {
		case unix.EAGAIN, unix.EINTR:
			return false
		case 0:
			w.sent += int(n)
		default: // skip the datagram that failed (e.g. EHOSTUNREACH for one peer) and go on
			w.err = errno
			w.sent++
		}
		return true
	}
	return w
}

func (w *writer) set(i int, peer netip.AddrPort, b []byte) {
	w.iovs[i].Base = &b[0]
	w.iovs[i].SetLen(len(b))
	p := peer.Port()
	if w.v6 {
		sa := &w.names[i]
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: peer.Addr().As16()}
		*(*[2]byte)(unsafe.Pointer(&sa.Port)) = [2]byte{byte(p >> 8), byte(p)}
		w.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		return
	}
	sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&w.names[i]))
	*sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: peer.Addr().Unmap().As4()}
	*(*[2]byte)(unsafe.Pointer(&sa.Port)) = [2]byte{byte(p >> 8), byte(p)}
	w.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
}

func (w *writer) write(b *batch) error {
	var first error
	for start := 0; start < len(b.items); start += len(w.hdrs) {
		w.n, w.sent = 0, 0
		for _, it := range b.items[start:min(start+len(w.hdrs), len(b.items))] {
			if it.end > it.off {
				w.set(w.n, it.peer, b.arena[it.off:it.end])
				w.n++
			}
		}
		for w.sent < w.n {
			w.err = nil
			if err := w.rc.Write(w.fn); err != nil {
				return err
			}
			if w.err != nil && first == nil {
				first = w.err
			}
		}
	}
	return first
}
