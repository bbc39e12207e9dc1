package loadgen

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// dtlsReadBuf is the largest decrypted response a device takes; a larger one counts as a
// receive error. CoAP responses to telemetry are a few bytes.
const dtlsReadBuf = 2048

// dtlsReaders runs one goroutine per DTLS device that reads decrypted datagrams from pion and
// passes them to the worker, which handles them like plain datagrams. The DTLS path allocates
// (a copy per datagram, and whatever pion allocates); the plain path does not.
type dtlsReaders struct {
	in      chan dtlsPacket
	quit    chan struct{}
	wg      sync.WaitGroup
	stopped bool
}

// dtlsPacket is one datagram read by device dev; data is nil when the read failed.
type dtlsPacket struct {
	dev  int
	data []byte
}

func newDTLSReaders() *dtlsReaders {
	return &dtlsReaders{in: make(chan dtlsPacket, 4096), quit: make(chan struct{})}
}

// addDTLS adds global device g, which has the established session conn.
func (w *worker) addDTLS(g int, conn *dtls.Conn, opts []coapmsg.Option) {
	port := 0
	if a, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		port = a.Port
	}
	w.devs = append(w.devs, device{
		fd:      -1,
		conn:    conn,
		port:    port,
		mid:     uint16(w.rng.Uint64()),
		startAt: int64(w.cfg.Ramp) * int64(g) / int64(w.cfg.Devices),
		opts:    opts,
	})
}

// runDTLS is run for DTLS devices: the same state machine, fed by the readers instead of epoll.
func (w *worker) runDTLS(stop *atomic.Bool) error {
	r := w.dtls
	for i := range w.devs {
		conn := w.devs[i].conn
		r.wg.Go(func() { r.read(i, conn) })
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for !stop.Load() {
		now := w.now()
		if now >= w.winEnd {
			break
		}
		w.startDevices(now)
		if now >= w.nextTimer {
			w.timers(now)
		}
		wake := min(w.nextTimer, w.winEnd)
		if w.nextStart < len(w.devs) {
			wake = min(wake, w.devs[w.nextStart].startAt)
		}
		timer.Reset(time.Duration(max(min(wake-now, int64(50*time.Millisecond)), 0)))
		select {
		case p := <-r.in:
			w.receiveDTLS(p)
		drain:
			for range 256 {
				select {
				case p := <-r.in:
					w.receiveDTLS(p)
				default:
					break drain
				}
			}
		case <-timer.C:
		}
	}
	for i := range w.devs {
		w.midUse = max(w.midUse, w.devs[i].seq)
	}
	return nil
}

func (w *worker) receiveDTLS(p dtlsPacket) {
	now := w.now()
	if p.data == nil {
		if w.counting(now) {
			w.c.recvErrors++
		}
		return
	}
	w.handle(p.dev, p.data, now)
}

// read passes device di's datagrams to the worker until the session fails or is closed.
func (r *dtlsReaders) read(di int, conn *dtls.Conn) {
	buf := make([]byte, dtlsReadBuf)
	for {
		n, err := conn.Read(buf)
		p := dtlsPacket{dev: di}
		var tmp *dtls.TemporaryError
		fatal := err != nil && !errors.As(err, &tmp)
		if err == nil {
			p.data = bytes.Clone(buf[:n])
		}
		select {
		case r.in <- p:
		case <-r.quit:
			return
		}
		if fatal {
			return
		}
	}
}

// stopDTLS closes the worker's sessions (each sends a close_notify) and waits for its readers.
func (w *worker) stopDTLS() {
	r := w.dtls
	if r == nil || r.stopped {
		return
	}
	r.stopped = true
	close(r.quit)
	for i := range w.devs {
		w.devs[i].conn.Close()
	}
	r.wg.Wait()
}
