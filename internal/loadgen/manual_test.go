package loadgen

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// Two tests that only run when asked, to measure the load generator itself on two pinned cores
// (docs/benchmarks.md has the commands):
//
//	loadgen.test -test.run '^TestManualResponder$' -responder 127.0.0.1:5799 -responder-for 40s
//	loadgen.test -test.run '^TestManualBench$' -bench-args '--target 127.0.0.1:5799 --duration 20s'
var (
	responderAddr = flag.String("responder", "", "TestManualResponder: answer CoAP requests on this address with piggybacked 2.04")
	responderFor  = flag.Duration("responder-for", time.Minute, "TestManualResponder: how long to serve")
	benchArgs     = flag.String("bench-args", "", "TestManualBench: load generator flags, as for coapgw-bench")
)

// TestManualResponder is a minimal fast CoAP responder: one socket, recvmmsg/sendmmsg in batches
// of 64, ACK 2.04 echoing MID and token for CON, NON 2.04 for NON. It stands in for a server
// that costs far less per message than any real one, so the load generator is the bottleneck.
func TestManualResponder(t *testing.T) {
	if *responderAddr == "" {
		t.Skip("set -responder host:port")
	}
	ua, err := net.ResolveUDPAddr("udp4", *responderAddr)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, o := range []int{unix.SO_RCVBUF, unix.SO_SNDBUF} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o, 8<<20); err != nil {
			t.Fatal(err)
		}
	}
	// recvmmsg wakes up at least this often to check the deadline.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000}); err != nil {
		t.Fatal(err)
	}
	sa := &unix.SockaddrInet4{Port: ua.Port}
	copy(sa.Addr[:], ua.IP.To4())
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(t.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("responder pid %d on %s for %v\n", os.Getpid(), *responderAddr, *responderFor)
	n, err := serveFast(ctx, fd, time.Now().Add(*responderFor))
	fmt.Printf("responder answered %d requests\n", n)
	if err != nil {
		t.Fatal(err)
	}
}

func serveFast(ctx context.Context, fd int, until time.Time) (uint64, error) {
	const batch = 64
	var (
		in    [batch]unix.Mmsghdr
		inIov [batch]unix.Iovec
		names [batch]unix.RawSockaddrInet4
		bufs  [batch][2048]byte
		out   [batch]unix.Mmsghdr
		oIov  [batch]unix.Iovec
		oBufs [batch][16]byte
		m     coapmsg.Message
		mid   uint16
		total uint64
	)
	for i := range in {
		inIov[i].Base = &bufs[i][0]
		inIov[i].SetLen(len(bufs[i]))
		in[i].Hdr.Iov = &inIov[i]
		in[i].Hdr.SetIovlen(1)
		in[i].Hdr.Name = (*byte)(unsafe.Pointer(&names[i]))
		out[i].Hdr.Iov = &oIov[i]
		out[i].Hdr.SetIovlen(1)
	}
	for ctx.Err() == nil && time.Now().Before(until) {
		for i := range in {
			in[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		}
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&in[0])), batch, unix.MSG_WAITFORONE, 0, 0)
		if e != 0 {
			if e == unix.EAGAIN || e == unix.EINTR {
				continue
			}
			return total, fmt.Errorf("recvmmsg: %w", e)
		}
		k := 0
		for i := range int(r) {
			pkt := bufs[i][:in[i].Len]
			t, code, reqMID, ok := coapmsg.Header(pkt)
			tkl := int(pkt[0] & 0x0f)
			if !ok || !code.IsRequest() || tkl > 8 || len(pkt) < 4+tkl {
				continue
			}
			m.Code, m.Token = coapmsg.Changed, pkt[4:4+tkl]
			switch t {
			case coapmsg.Confirmable:
				m.Type, m.MID = coapmsg.Acknowledgement, reqMID
			case coapmsg.NonConfirmable:
				mid++
				m.Type, m.MID = coapmsg.NonConfirmable, mid
			default:
				continue
			}
			b, _ := m.Append(oBufs[k][:0])
			oIov[k].Base = &oBufs[k][0]
			oIov[k].SetLen(len(b))
			out[k].Hdr.Name = in[i].Hdr.Name
			out[k].Hdr.Namelen = in[i].Hdr.Namelen
			k++
		}
		for sent := 0; sent < k; {
			w, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&out[sent])), uintptr(k-sent), 0, 0, 0)
			if e != 0 {
				if e == unix.EINTR || e == unix.EAGAIN {
					continue
				}
				break // e.g. ECONNREFUSED from a closed peer: drop the rest of the batch
			}
			sent += int(w)
		}
		total += uint64(k)
	}
	return total, nil
}

// TestManualBench runs the load generator with command-line flags, as coapgw-bench does, and
// prints the result.
func TestManualBench(t *testing.T) {
	if *benchArgs == "" {
		t.Skip("set -bench-args")
	}
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	cfg.Flags(fs)
	if err := fs.Parse(strings.Fields(*benchArgs)); err != nil {
		t.Fatal(err)
	}
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.JSON {
		res.WriteJSON(os.Stdout)
	} else {
		res.WriteText(os.Stdout)
	}
}
