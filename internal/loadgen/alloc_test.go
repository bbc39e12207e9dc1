package loadgen

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// exchange is the worker's per-message path without the network: the piggybacked 2.04 for
// slot 0 of device 0 is handled, which encodes and writes the next request. The device's socket
// is swapped for a full AF_UNIX datagram socket, so the write is a real system call that fails
// at once with EAGAIN instead of running a UDP receive path and waking a reader.
type exchange struct {
	w    *worker
	resp coapmsg.Message
	buf  []byte
}

func newExchange(tb testing.TB) *exchange {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.Devices, cfg.Inflight = 1, 1
	w, err := newWorker(&cfg, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}, 0, 1, time.Now(), 0, 1<<62, 1)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(w.close)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(fds[1]) })
	unix.Close(w.devs[0].fd)
	w.devs[0].fd = fds[0] // closed by w.close
	for {
		if _, err := unix.Write(fds[0], make([]byte, 64)); err == unix.EAGAIN {
			break
		} else if err != nil {
			tb.Fatal(err)
		}
	}
	w.send(&w.devs[0], &w.slots[0], w.now())
	return &exchange{w: w, buf: make([]byte, 0, 64)}
}

func (e *exchange) step() {
	s := &e.w.slots[0]
	e.resp.Type, e.resp.Code, e.resp.MID, e.resp.Token = coapmsg.Acknowledgement, coapmsg.Changed, s.mid, s.token[:e.w.cfg.TokenLen]
	e.buf, _ = e.resp.Append(e.buf[:0])
	e.w.handle(0, e.buf, e.w.now())
}

func TestNoAllocationPerMessage(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	e := newExchange(t)
	before := e.w.c.delivered
	if n := testing.AllocsPerRun(1000, e.step); n != 0 {
		t.Errorf("%v allocations per message, want 0", n)
	}
	if e.w.c.delivered-before < 1000 {
		t.Errorf("delivered %d, want every step to complete an exchange", e.w.c.delivered-before)
	}
}

// BenchmarkExchange is the load generator's user-space cost per message plus one cheap system
// call: decode and match a response, record its latency, encode and write the next request.
func BenchmarkExchange(b *testing.B) {
	e := newExchange(b)
	b.ReportAllocs()
	for b.Loop() {
		e.step()
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h histogram
	v := int64(1)
	for b.Loop() {
		h.record(v)
		v = v*1103515245 + 12345&(1<<32-1)
	}
}
