//go:build !linux

package coapserver

import (
	"net"
	"syscall"
)

// Portable fallback: one datagram per system call.

func setSockopts(c syscall.RawConn, reuseport bool, bufBytes int) error { return nil }

func (s *Server) kernelDrops() uint64 { return 0 }

func receiveBuffer(*net.UDPConn) (int, bool) { return 0, false }
