package loadgen

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/dtlsrecord"
)

// Slot states.
const (
	slotIdle    uint8 = iota
	slotWaitRsp       // request sent, waiting for an ACK (CON) or a response (NON)
	slotWaitSep       // empty ACK received, waiting for the separate response
)

// slot is one outstanding request of a device.
type slot struct {
	state    uint8
	retries  uint8
	mid      uint16
	token    [coapmsg.MaxTokenLen]byte
	first    int64 // first transmission, ns since worker.base
	deadline int64 // next retransmission or give-up, ns since worker.base
	timeout  int64 // current retransmission timeout
	pkt      []byte
}

// device is one virtual device: its own connected, non-blocking UDP socket and MID space, and
// in DTLS mode its session's record layer.
type device struct {
	fd      int
	rec     *dtlsrecord.Conn // DTLS mode only (the socket belongs to the handshake phase)
	port    int
	mid     uint16
	seq     uint64 // requests sent, the payload's "seq"
	startAt int64
	opts    []coapmsg.Option // Uri-Path segments and Content-Format
}

// counters are a worker's tallies inside the measured window.
type counters struct {
	sent            uint64 // first transmissions
	retransmissions uint64
	lost            uint64 // CON: gave up after MaxRetransmit; NON: no response within NONTimeout
	separateLost    uint64 // empty ACK, but no separate response within MAX_TRANSMIT_WAIT
	responses       uint64 // matched final responses, any code (RST excluded)
	delivered       uint64 // 2.04
	rst             uint64
	emptyACKs       uint64
	separate        uint64 // responses that came as CON or NON rather than piggybacked
	acksSent        uint64 // empty ACKs we sent for CON responses
	unmatched       uint64 // duplicates and strays: no outstanding request matches
	tokenMismatch   uint64 // piggybacked ACK whose MID matches but token does not
	malformed       uint64
	unexpected      uint64 // requests or other non-responses from the server
	sendErrors      uint64
	recvErrors      uint64
	codes           [256]uint64
}

func (c *counters) add(o *counters) {
	c.sent += o.sent
	c.retransmissions += o.retransmissions
	c.lost += o.lost
	c.separateLost += o.separateLost
	c.responses += o.responses
	c.delivered += o.delivered
	c.rst += o.rst
	c.emptyACKs += o.emptyACKs
	c.separate += o.separate
	c.acksSent += o.acksSent
	c.unmatched += o.unmatched
	c.tokenMismatch += o.tokenMismatch
	c.malformed += o.malformed
	c.unexpected += o.unexpected
	c.sendErrors += o.sendErrors
	c.recvErrors += o.recvErrors
	for i, n := range o.codes {
		c.codes[i] += n
	}
}

// worker owns a set of devices and drives them from one goroutine with an epoll loop. Nothing
// in the per-message path allocates.
type worker struct {
	cfg           *Config
	appendPayload func(b []byte, seq uint64, pad []byte) []byte // Config.Format's
	epfd          int
	devs          []device
	slots         []slot // device i owns slots[i*Inflight : (i+1)*Inflight]
	base          time.Time
	winStart      int64
	winEnd        int64

	initTimeout float64 // AckTimeout in ns
	randSpan    float64 // AckTimeout*(AckRandomFactor-1) in ns
	nonTimeout  int64
	sepTimeout  int64
	minTimeout  int64

	rng       rand.PCG
	msgType   coapmsg.Type
	code      coapmsg.Code // the request method
	enc       coapmsg.Message
	dec       coapmsg.Message
	ackMsg    coapmsg.Message // empty ACK for CON responses
	pay       []byte
	pad       []byte
	rbuf      []byte
	ack       []byte
	nextTimer int64
	nextStart int

	c       counters
	lat     histogram // all matched responses
	latDlvd histogram // 2.04 only
	midUse  uint64    // most requests any device sent: > 65536 means MIDs were reused

	sbuf []byte // DTLS mode: the sealed record being sent
}

const timerSlack = int64(time.Millisecond)

// newWorker opens the sockets of the devices with global indexes first, first+stride, ...
func newWorker(cfg *Config, raddr *net.UDPAddr, first, stride int, base time.Time, winStart, winEnd int64, seed uint64) (*worker, error) {
	return buildWorker(cfg, raddr, nil, first, stride, base, winStart, winEnd, seed)
}

// buildWorker is newWorker, in DTLS mode over the established sessions (by global device index;
// devices whose handshake failed are left out).
func buildWorker(cfg *Config, raddr *net.UDPAddr, sessions []*dtlsSession, first, stride int, base time.Time, winStart, winEnd int64, seed uint64) (*worker, error) {
	w := &worker{
		cfg:      cfg,
		epfd:     -1,
		base:     base,
		winStart: winStart,
		winEnd:   winEnd,
		rng:      *rand.NewPCG(seed, seed^0x9e3779b97f4a7c15),
		msgType:  coapmsg.Confirmable,
		pay:      make([]byte, 0, cfg.PayloadSize+64),
		pad:      make([]byte, cfg.PayloadSize),
		rbuf:     make([]byte, 65536),
		ack:      make([]byte, 0, 16),
	}
	w.ackMsg.Type, w.ackMsg.Code = coapmsg.Acknowledgement, coapmsg.Empty
	code, err := cfg.code()
	if err != nil {
		return nil, err
	}
	segs, err := cfg.pathSegments()
	if err != nil {
		return nil, err
	}
	w.code = code
	if cfg.NON {
		w.msgType = coapmsg.NonConfirmable
	}
	w.initTimeout = float64(cfg.AckTimeout)
	w.randSpan = float64(cfg.AckTimeout) * (cfg.AckRandomFactor - 1)
	w.nonTimeout = int64(cfg.NONTimeout)
	w.sepTimeout = int64(cfg.maxTransmitWait())
	w.minTimeout = int64(cfg.AckTimeout)
	if cfg.NON {
		w.minTimeout = w.nonTimeout
	}
	for i := range w.pad {
		w.pad[i] = 'x'
	}
	w.nextTimer = winEnd

	if w.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	n := 0
	for g := first; g < cfg.Devices; g += stride {
		if sessions == nil || sessions[g] != nil {
			n++
		}
	}
	w.devs = make([]device, 0, n)
	w.slots = make([]slot, n*cfg.Inflight)
	pathLen := len(cfg.Type) + len(cfg.IDPrefix) + 20
	if segs != nil {
		pathLen = len(cfg.Path) + 3*len(segs)
	}
	pktCap := 32 + pathLen + cfg.PayloadSize + 64
	arena := make([]byte, len(w.slots)*pktCap)
	for i := range w.slots {
		w.slots[i].pkt = arena[i*pktCap : i*pktCap : (i+1)*pktCap]
	}
	cfn, appendPayload := cfg.format()
	w.appendPayload = appendPayload
	cf := coapmsg.AppendUint(nil, cfn)
	typ := []byte(cfg.Type)
	// With a fixed path every device shares one option list; encoding only reads it.
	var fixed []coapmsg.Option
	if segs != nil {
		for _, sg := range segs {
			fixed = append(fixed, coapmsg.Option{Number: coapmsg.URIPath, Value: []byte(sg)})
		}
		fixed = append(fixed, coapmsg.Option{Number: coapmsg.ContentFormat, Value: cf})
	}
	makeOpts := func(g int) []coapmsg.Option {
		if fixed != nil {
			return fixed
		}
		return []coapmsg.Option{
			{Number: coapmsg.URIPath, Value: typ},
			{Number: coapmsg.URIPath, Value: []byte(cfg.IDPrefix + strconv.Itoa(g))},
			{Number: coapmsg.ContentFormat, Value: cf},
		}
	}
	for g := first; g < cfg.Devices; g += stride {
		if sessions != nil {
			if s := sessions[g]; s != nil {
				if err := w.addDTLS(g, s, makeOpts(g)); err != nil {
					w.close()
					return nil, err
				}
			}
			continue
		}
		fd, port, err := dial(raddr)
		if err != nil {
			w.close()
			if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
				err = fmt.Errorf("%w (raise the open-file limit, ulimit -n, above the device count)", err)
			}
			return nil, fmt.Errorf("device %d: %w", g, err)
		}
		i := len(w.devs)
		w.devs = append(w.devs, device{
			fd:      fd,
			port:    port,
			mid:     uint16(w.rng.Uint64()),
			startAt: int64(cfg.Ramp) * int64(g) / int64(cfg.Devices),
			opts:    makeOpts(g),
		})
		ev := unix.EpollEvent{Events: unix.EPOLLIN}
		ev.Fd = int32(i)
		if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			w.close()
			return nil, fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	return w, nil
}

// dial opens a non-blocking UDP socket connected to raddr, so the kernel picks a source port
// and filters datagrams from anyone else.
func dial(raddr *net.UDPAddr) (fd, port int, err error) {
	var sa unix.Sockaddr
	family := unix.AF_INET
	if ip4 := raddr.IP.To4(); ip4 != nil {
		a := &unix.SockaddrInet4{Port: raddr.Port}
		copy(a.Addr[:], ip4)
		sa = a
	} else {
		family = unix.AF_INET6
		a := &unix.SockaddrInet6{Port: raddr.Port}
		copy(a.Addr[:], raddr.IP.To16())
		sa = a
	}
	fd, err = unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("connect %v: %w", raddr, err)
	}
	la, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("getsockname: %w", err)
	}
	switch a := la.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	}
	return fd, port, nil
}

func (w *worker) close() {
	for _, d := range w.devs {
		if d.rec == nil {
			unix.Close(d.fd)
		}
	}
	w.devs = nil
	if w.epfd >= 0 {
		unix.Close(w.epfd)
		w.epfd = -1
	}
}

func (w *worker) now() int64 { return int64(time.Since(w.base)) }

func (w *worker) counting(now int64) bool { return now >= w.winStart && now < w.winEnd }

// run drives the devices until the measured window ends or stop is set.
func (w *worker) run(stop *atomic.Bool) error {
	events := make([]unix.EpollEvent, 1024)
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
		ms := 0
		if wake > now {
			ms = int(min((wake-now+int64(time.Millisecond)-1)/int64(time.Millisecond), 50))
		}
		n, err := unix.EpollWait(w.epfd, events, ms)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for i := range n {
			w.receive(int(events[i].Fd))
		}
	}
	for i := range w.devs {
		w.midUse = max(w.midUse, w.devs[i].seq)
	}
	return nil
}

func (w *worker) startDevices(now int64) {
	k := w.cfg.Inflight
	for w.nextStart < len(w.devs) && w.devs[w.nextStart].startAt <= now {
		i := w.nextStart
		w.nextStart++
		for j := range k {
			w.send(&w.devs[i], &w.slots[i*k+j], now)
		}
		// A new request's deadline is at least minTimeout away; keep the timer scan no later.
		w.nextTimer = min(w.nextTimer, now+w.minTimeout)
	}
}

// send issues a new request from s, which must be idle.
func (w *worker) send(d *device, s *slot, now int64) {
	d.mid++
	d.seq++
	s.mid = d.mid
	tl := w.cfg.TokenLen
	r := w.rng.Uint64()
	for i := range tl {
		s.token[i] = byte(r >> (8 * i))
	}
	w.pay = w.appendPayload(w.pay[:0], d.seq, w.pad[:padLen(w.cfg.PayloadSize, d.seq)])

	w.enc.Type = w.msgType
	w.enc.Code = w.code
	w.enc.MID = s.mid
	w.enc.Token = s.token[:tl]
	w.enc.Options = d.opts
	w.enc.Payload = w.pay
	s.pkt, _ = w.enc.Append(s.pkt[:0]) // cannot fail: token ≤ 8, options in order

	s.state = slotWaitRsp
	s.retries = 0
	s.first = now
	if w.cfg.NON {
		s.timeout = w.nonTimeout
	} else {
		s.timeout = int64(w.initTimeout + w.randSpan*float64(w.rng.Uint64()>>11)/(1<<53))
	}
	s.deadline = now + s.timeout
	if w.counting(now) {
		w.c.sent++
	}
	w.write(d, s.pkt, now)
}

func (w *worker) write(d *device, p []byte, now int64) {
	var err error
	if d.rec != nil {
		err = w.writeDTLS(d, p)
	} else {
		_, err = unix.Write(d.fd, p)
	}
	if err != nil && w.counting(now) {
		// ECONNREFUSED (an earlier ICMP port unreachable), ENOBUFS, EAGAIN: the request stays
		// outstanding and is retransmitted or times out like a datagram lost on the way.
		w.c.sendErrors++
	}
}

// receive reads one datagram from d; level-triggered epoll reports d again if more are queued,
// which saves the read that would return EAGAIN.
func (w *worker) receive(di int) {
	n, err := unix.Read(w.devs[di].fd, w.rbuf)
	now := w.now()
	if err != nil {
		if err != unix.EAGAIN && w.counting(now) {
			w.c.recvErrors++
		}
		return
	}
	if w.devs[di].rec != nil {
		w.receiveDTLS(di, w.rbuf[:n], now)
		return
	}
	w.handle(di, w.rbuf[:n], now)
}

func (w *worker) findMID(i int, mid uint16) *slot {
	k := w.cfg.Inflight
	for j := range k {
		s := &w.slots[i*k+j]
		if s.state != slotIdle && s.mid == mid {
			return s
		}
	}
	return nil
}

func (w *worker) findToken(i int, tok []byte) *slot {
	k := w.cfg.Inflight
	for j := range k {
		s := &w.slots[i*k+j]
		if s.state != slotIdle && string(s.token[:w.cfg.TokenLen]) == string(tok) {
			return s
		}
	}
	return nil
}

// handle matches one datagram from the server against d's outstanding requests.
func (w *worker) handle(di int, pkt []byte, now int64) {
	d := &w.devs[di]
	count := w.counting(now)
	m := &w.dec
	if err := m.Decode(pkt); err != nil {
		if count {
			w.c.malformed++
		}
		return
	}
	switch m.Type {
	case coapmsg.Acknowledgement:
		s := w.findMID(di, m.MID)
		if s == nil || s.state != slotWaitRsp {
			if count {
				w.c.unmatched++
			}
			return
		}
		if m.Code == coapmsg.Empty {
			s.state = slotWaitSep
			s.deadline = now + w.sepTimeout
			if count {
				w.c.emptyACKs++
			}
			return
		}
		if string(m.Token) != string(s.token[:w.cfg.TokenLen]) {
			if count {
				w.c.tokenMismatch++
			}
			return
		}
		w.complete(d, s, m.Code, now, count)
	case coapmsg.Reset:
		s := w.findMID(di, m.MID)
		if s == nil || s.state != slotWaitRsp {
			if count {
				w.c.unmatched++
			}
			return
		}
		if count {
			w.c.rst++
		}
		s.state = slotIdle
		w.send(d, s, now)
	default: // CON or NON from the server: a separate response (or a NON response)
		if m.Type == coapmsg.Confirmable {
			// Acknowledge every CON, duplicates included (RFC 7252 §4.2, §5.2.2).
			w.ackMsg.MID = m.MID
			w.ack, _ = w.ackMsg.Append(w.ack[:0])
			w.write(d, w.ack, now)
			if count {
				w.c.acksSent++
			}
		}
		if !m.Code.IsResponse() {
			if count {
				w.c.unexpected++
			}
			return
		}
		// A separate response may overtake its empty ACK, so any outstanding request matches.
		s := w.findToken(di, m.Token)
		if s == nil {
			if count {
				w.c.unmatched++
			}
			return
		}
		if count && !w.cfg.NON {
			w.c.separate++
		}
		w.complete(d, s, m.Code, now, count)
	}
}

func (w *worker) complete(d *device, s *slot, code coapmsg.Code, now int64, count bool) {
	if count {
		lat := now - s.first
		w.c.responses++
		w.c.codes[code]++
		w.lat.record(lat)
		if code == coapmsg.Changed {
			w.c.delivered++
			w.latDlvd.record(lat)
		}
	}
	s.state = slotIdle
	w.send(d, s, now)
}

// timers retransmits and gives up on requests whose deadline passed, and finds the next deadline.
func (w *worker) timers(now int64) {
	k := w.cfg.Inflight
	next := now + w.minTimeout
	count := w.counting(now)
	for i := range w.slots {
		s := &w.slots[i]
		if s.state == slotIdle {
			continue
		}
		if s.deadline > now {
			next = min(next, s.deadline)
			continue
		}
		d := &w.devs[i/k]
		if s.state == slotWaitRsp && !w.cfg.NON && int(s.retries) < w.cfg.MaxRetransmit {
			s.retries++
			s.timeout *= 2
			s.deadline = now + s.timeout
			next = min(next, s.deadline)
			if count {
				w.c.retransmissions++
			}
			w.write(d, s.pkt, now)
			continue
		}
		if count {
			if s.state == slotWaitSep {
				w.c.separateLost++
			} else {
				w.c.lost++
			}
		}
		s.state = slotIdle
		w.send(d, s, now)
		next = min(next, s.deadline)
	}
	w.nextTimer = max(next, now+timerSlack)
}

// outstanding counts requests still waiting for an answer.
func (w *worker) outstanding() int {
	n := 0
	for i := range w.slots {
		if w.slots[i].state != slotIdle {
			n++
		}
	}
	return n
}
