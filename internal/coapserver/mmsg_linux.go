package coapserver

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// forceBuffers is whether setSockopts tries SO_RCVBUFFORCE/SO_SNDBUFFORCE first; tests turn
// it off to see what a process without CAP_NET_ADMIN gets.
var forceBuffers = true

func setSockopts(c syscall.RawConn, reuseport bool, bufBytes int) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if reuseport {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
				return
			}
		}
		// SO_*BUFFORCE lifts net.core.rmem_max for root; fall back to the capped call otherwise.
		// The capped call is silently cut to net.core.rmem_max: Listen reads the result back
		// (receiveBuffer) and warns.
		if !forceBuffers || unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bufBytes) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, bufBytes)
		}
		if !forceBuffers || unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, bufBytes) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, bufBytes)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// receiveBuffer is the receive buffer the kernel gave c, in the bytes SO_RCVBUF asks for:
// Linux reports twice what it reserves for payload (the rest is its bookkeeping), so half the
// reported size. ok is false when it cannot be read.
func receiveBuffer(c *net.UDPConn) (n int, ok bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		n, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	}); err != nil || gerr != nil {
		return 0, false
	}
	return n / 2, true
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
