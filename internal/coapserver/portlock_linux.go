package coapserver

import (
	"errors"
	"strconv"

	"golang.org/x/sys/unix"
)

// lockPort takes the machine-wide lock on UDP port port: a unix socket bound to the abstract
// name "@coapgw-udp-<port>". Only one socket can hold an abstract name (bind fails with
// EADDRINUSE), the kernel frees it when the process exits however it ends, and no file is left
// to clean up. Abstract names live in the network namespace, as ports do. It returns
// ErrPortServed when another process (or another Server in this one) holds the lock.
func lockPort(port uint16) (release func(), err error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: "@coapgw-udp-" + strconv.Itoa(int(port))}); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, ErrPortServed
		}
		return nil, err
	}
	return func() { unix.Close(fd) }, nil
}
