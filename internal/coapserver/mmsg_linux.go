package coapserver

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

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
