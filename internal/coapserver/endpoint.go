package coapserver

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// Handler answers requests. It is shaped like net/http: ServeCoAP must call w.Respond exactly once,
// either before it returns or, after calling w.Defer, later from any goroutine. r is valid only
// until ServeCoAP returns.
type Handler interface {
	ServeCoAP(w *ResponseWriter, r *Request)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(w *ResponseWriter, r *Request)

// ServeCoAP calls f(w, r).
func (f HandlerFunc) ServeCoAP(w *ResponseWriter, r *Request) { f(w, r) }

// Middleware wraps a Handler, as net/http middleware does: the Handler it returns answers a
// request itself or passes it on to the one it wrapped.
type Middleware func(Handler) Handler

// Sender takes datagrams from the exchange layer to the wire. Send must copy b before returning and
// must not block for long; it may be called from any goroutine.
type Sender interface {
	Send(peer netip.AddrPort, b []byte)
}

// Options tune the exchange layer; zero values take RFC 7252 defaults.
type Options struct {
	ExchangeLifetime  time.Duration // CON dedup window, default 247 s
	NonLifetime       time.Duration // NON dedup window, default 145 s
	PiggybackDeadline time.Duration // empty ACK after this, default 1 s
	AckTimeout        time.Duration // separate CON response retransmission, default 2 s
	MaxRetransmit     int           // default 4
	DedupGlobalCap    int           // default 500,000 entries (~230 B each)
	DedupPerPeerCap   int           // default 1024 entries
	DedupShards       int           // default 64
	MaxOutstanding    int           // separate CON responses awaiting ACK, default 10,000
	// MaxRequestBody, if set, is the Size1 of the 4.13 answering an oversized datagram: the
	// largest payload the handler takes (RFC 7252 §5.10.9).
	MaxRequestBody int
	// BlockWise turns on block-wise transfer (RFC 7959) in the endpoint (block1.go, block2.go):
	// it reassembles Block1 request bodies of up to MaxRequestBody bytes and hands the handler
	// one request with the whole body, and sends a 2.xx payload larger than a block in Block2
	// blocks. Without it Block1 and Block2 are answered 4.02 as any unrecognised critical
	// option is.
	BlockWise bool
	// BlockSize is the largest block the endpoint takes in a Block1 body without asking for a
	// smaller one, and sends in a Block2 response: 16 to 1024 bytes, a power of two; default 1024.
	BlockSize int
	// BlockMaxBytes bounds the memory of the bodies being reassembled, all peers together
	// (default 32 MiB); BlockPerPeer the bodies one peer reassembles at once (default 4); and
	// BlockTimeout how long a body waits for its next block (default ExchangeLifetime).
	BlockMaxBytes int
	BlockPerPeer  int
	BlockTimeout  time.Duration
	// RetryAfter is the Max-Age of the endpoint's own 5.03 (reassembly memory full); default 5 s.
	RetryAfter time.Duration
	// Observe (observe.go): MaxObservers bounds the observers registered (default 10,000);
	// ObserveKeepAlive is the longest an observer goes without a CON notification (default
	// 24 h); ObserveCONEvery makes every n-th notification to an observer a CON (default 5).
	MaxObservers     int
	ObserveKeepAlive time.Duration
	ObserveCONEvery  int
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.ExchangeLifetime, 247*time.Second)
	def(&o.NonLifetime, 145*time.Second)
	def(&o.PiggybackDeadline, time.Second)
	def(&o.AckTimeout, 2*time.Second)
	def(&o.BlockTimeout, o.ExchangeLifetime)
	def(&o.RetryAfter, 5*time.Second)
	def(&o.ObserveKeepAlive, DefaultObserveKeepAlive)
	defi := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	defi(&o.MaxRetransmit, 4)
	defi(&o.DedupGlobalCap, 500_000)
	defi(&o.DedupPerPeerCap, 1024)
	defi(&o.DedupShards, 64)
	defi(&o.MaxOutstanding, 10_000)
	defi(&o.BlockSize, 1024)
	defi(&o.BlockMaxBytes, 32<<20)
	defi(&o.BlockPerPeer, 4)
	defi(&o.MaxObservers, DefaultMaxObservers)
	defi(&o.ObserveCONEvery, DefaultObserveCONEvery)
}

// Endpoint is the transport-agnostic RFC 7252 message layer: HandleDatagram takes a datagram from
// a peer and the Sender gets the datagrams to send back. UDP feeds it today; DTLS can later.
type Endpoint struct {
	h     Handler
	obs   RejectObserver // h, if it is one
	out   Sender
	opts  Options
	log   *slog.Logger
	m     *Metrics
	dedup *dedup
	msgs  sync.Pool
	bufs  sync.Pool
	mid   atomic.Uint32
	clock func() time.Time
	epoch time.Time

	blockSZX   uint8       // Options.BlockSize as an SZX
	sliceAbove int         // a response payload longer than this goes block-wise: the block size, or never without BlockWise
	bodies     *reassembly // Block1 bodies being reassembled (block1.go); nil without BlockWise

	mu          sync.Mutex
	pending     ring[*ResponseWriter]      // deferred CON exchanges, arrival order
	outstanding map[outKey]*ResponseWriter // separate CON responses awaiting ACK
	wg          sync.WaitGroup
	stop        chan struct{}
	life        sync.Mutex // orders Start and Stop
	started     bool       // under life
	stopped     bool       // under life: stop is closed
	inflight    inflightCounter

	watch observers // Observe (observe.go)
}

type outKey struct {
	peer peerKey
	mid  uint16
}

// NewEndpoint builds the exchange layer. m may be nil.
func NewEndpoint(h Handler, out Sender, opts Options, log *slog.Logger, m *Metrics) *Endpoint {
	opts.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	e := &Endpoint{
		h: h, out: out, opts: opts, log: log, m: m,
		dedup:       newDedup(opts.DedupShards, opts.DedupGlobalCap, opts.DedupPerPeerCap, int64(opts.ExchangeLifetime), int64(opts.NonLifetime)),
		clock:       time.Now,
		outstanding: make(map[outKey]*ResponseWriter),
		stop:        make(chan struct{}),
	}
	e.obs, _ = h.(RejectObserver)
	e.blockSZX = coapmsg.BlockSZX(opts.BlockSize)
	e.sliceAbove = int(^uint(0) >> 1)
	if opts.BlockWise {
		e.sliceAbove = 1 << (e.blockSZX + 4)
		e.bodies = newReassembly(opts, m)
	}
	e.epoch = e.clock()
	e.watch.init(e.epoch)
	e.mid.Store(uint32(e.epoch.UnixNano()))
	e.msgs.New = func() any { return new(coapmsg.Message) }
	e.bufs.New = func() any { b := make([]byte, 0, 1280); return &b }
	return e
}

// Start runs the timer goroutine that sends empty ACKs for slow exchanges and retransmits separate
// responses. Stop ends it. Start after Stop, or a second Start, does nothing.
func (e *Endpoint) Start() {
	e.life.Lock()
	defer e.life.Unlock()
	if e.started || e.stopped {
		return
	}
	e.started = true
	e.wg.Add(1)
	go e.timers()
}

// Stop ends the timer goroutine; it is idempotent. Start and Stop are ordered by e.life, so that
// they may come from goroutines not otherwise synchronised: a Stop waits for a timer goroutine a
// Start before it began, and a Start after it begins none.
func (e *Endpoint) Stop() {
	e.life.Lock()
	if !e.stopped {
		e.stopped = true
		close(e.stop)
	}
	e.life.Unlock()
	e.wg.Wait()
}

// Inflight is the number of requests handed to the handler and not yet answered.
func (e *Endpoint) Inflight() int64 { return e.inflight.Load() }

// DedupEntries is the number of (peer, MID) pairs remembered.
func (e *Endpoint) DedupEntries() int { return e.dedup.len() }

func (e *Endpoint) now() int64 { return int64(e.clock().Sub(e.epoch)) }

func (e *Endpoint) nextMID() uint16 { return uint16(e.mid.Add(1)) }

// HandleDatagram processes one datagram from peer. data is not retained after it returns.
func (e *Endpoint) HandleDatagram(peer netip.AddrPort, data []byte) { e.handle(peer, peer, "", data) }

// handle is HandleDatagram with the peer's key (dedup, answers) apart from its address and
// identity (Request.Peer, Request.Identity): see HandleSession.
func (e *Endpoint) handle(peer, addr netip.AddrPort, identity string, data []byte) {
	msg := e.msgs.Get().(*coapmsg.Message)
	defer e.msgs.Put(msg)
	err := msg.Decode(data)
	if err != nil {
		switch err {
		case coapmsg.ErrShort:
			e.m.disp(dispShort)
		case coapmsg.ErrVersion:
			e.m.disp(dispVersion)
		case coapmsg.ErrTooManyOptions:
			e.tooManyOptions(peer, msg)
		default:
			e.m.disp(dispFormat)
			if t, _, mid, ok := coapmsg.Header(data); ok && t == coapmsg.Confirmable {
				e.sendRST(peer, mid)
			}
		}
		return
	}
	switch msg.Type {
	case coapmsg.Acknowledgement, coapmsg.Reset:
		e.m.disp(dispAckRst)
		e.matchOutstanding(peer, msg)
		return
	}
	con := msg.Type == coapmsg.Confirmable
	switch {
	case msg.Code == coapmsg.Empty:
		if con {
			e.m.disp(dispPing)
			e.sendRST(peer, msg.MID)
		} else {
			e.m.disp(dispFormat) // an empty NON is not a valid message
		}
		return
	case !msg.Code.IsRequest():
		// A response we never asked for, or a reserved class (1.xx, 6.xx, 7.xx): reject (§4.2/§4.3).
		e.m.disp(dispUnsolicited)
		if con {
			e.sendRST(peer, msg.MID)
		}
		return
	}

	now := e.clock()
	rel := int64(now.Sub(e.epoch))
	k := dedupKey{peer: makePeerKey(peer), mid: msg.MID}
	bp := e.bufs.Get().(*[]byte)
	res, seq, buf := e.dedup.begin(k, con, rel, (*bp)[:0])
	switch res {
	case lookReplay:
		if con {
			e.m.disp(dispDuplicate)
			if len(buf) > 1 && buf[1] != 0 {
				e.m.resp(coapmsg.Code(buf[1]))
			}
			e.out.Send(peer, buf)
		} else {
			e.m.disp(dispDuplicate) // NON duplicates are ignored
		}
		*bp = buf[:0]
		e.bufs.Put(bp)
		return
	case lookInflight:
		e.m.disp(dispDuplicate)
		e.bufs.Put(bp)
		return
	}
	e.bufs.Put(bp)
	e.m.disp(dispRequest)

	// The Request lives in the ResponseWriter (one allocation for the exchange) and is cleared
	// when ServeCoAP returns: it aliases the datagram, which the caller reuses.
	w := &ResponseWriter{e: e, peer: peer, key: k, seq: seq, con: con, mid: msg.MID, arrived: rel, reqSize: len(data), verified: identity != ""}
	w.tkl = uint8(copy(w.token[:], msg.Token))
	e.inflight.Add(1)
	r := &w.req
	r.Peer, r.Identity, r.Received = addr, identity, now
	if code, num := r.parse(msg, e.opts.BlockWise); code != 0 {
		e.rejectOptions(w, r, code, num)
	} else if r.has&(hasBlock1|hasBlock2) != 0 { // only with Options.BlockWise
		e.serveBlockWise(w, r)
	} else {
		e.h.ServeCoAP(w, r)
	}
	w.req = Request{}
	if w.state.Load() == wsNew && !w.deferred {
		// A handler that forgot to answer: a 5.00 is better than a client retransmitting into the void.
		e.log.Error("handler returned without responding", "peer", peer)
		w.Respond(coapmsg.InternalServerError, nil)
	}
	if w.deferred && con && w.state.Load() == wsNew {
		e.mu.Lock()
		e.pending.push(w)
		e.mu.Unlock()
	}
}

// HandleOversized takes a datagram longer than the transport reads whole: data is its first
// bytes, the rest is lost, so nothing of it reaches the handler (a cut payload must never be
// stored as if whole). A CON request is answered 4.13 Request Entity Too Large (RFC 7252
// §5.9.2.9) in a piggybacked ACK with its token, and Size1 when Options.MaxRequestBody is set;
// anything else is dropped.
func (e *Endpoint) HandleOversized(peer netip.AddrPort, data []byte) {
	e.m.disp(dispOversized)
	t, code, mid, ok := coapmsg.Header(data)
	if !ok || t != coapmsg.Confirmable || !code.IsRequest() {
		return
	}
	tkl := int(data[0] & 0x0f)
	if tkl > 8 || len(data) < 4+tkl {
		e.sendRST(peer, mid) // a format error (§3): a CON gets RST
		return
	}
	resp := coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.RequestEntityTooLarge, MID: mid, Token: data[4 : 4+tkl]}
	if e.opts.BlockWise {
		// RFC 7959 §2.9.3: a Block1 option in the 4.13 says the body may come block-wise, in
		// blocks of this size.
		resp.Options = append(resp.Options, coapmsg.Option{Number: coapmsg.Block1, Value: coapmsg.AppendBlock(nil, 0, false, e.blockSZX)})
	}
	if e.opts.MaxRequestBody > 0 {
		resp.Options = append(resp.Options, coapmsg.Option{Number: coapmsg.Size1, Value: coapmsg.AppendUint(nil, uint32(e.opts.MaxRequestBody))})
	}
	b, err := resp.Append(nil)
	if err != nil {
		return
	}
	e.m.resp(coapmsg.RequestEntityTooLarge)
	e.out.Send(peer, b)
}

// tooManyOptions answers a message Decode stopped reading at coapmsg.MaxOptions options, before
// deduplication and the handler, at the cost of its first MaxOptions options whatever it packs.
// The message is well formed, so it gets no RST (RFC 7252 §4.2 keeps that for messages the
// receiver lacks the context to process, format errors among them): a CON request is a request
// the gateway will not process, and gets a piggybacked 4.00 Bad Request (§5.9.2.1) with its
// token and a diagnostic, far shorter than the request it answers (at least MaxOptions+4 bytes),
// so it amplifies nothing. It is no 4.02 either, which names an unrecognised critical option
// (§5.4.1), when the options may all be elective. A NON request is dropped, as a NON the server
// rejects may be (§4.3); a CON that is no request (a response, a reserved class) gets RST as in
// handle; an ACK or RST is ignored. Retransmissions are answered again, equally cheaply.
var diagTooManyOptions = []byte("too many options")

func (e *Endpoint) tooManyOptions(peer netip.AddrPort, msg *coapmsg.Message) {
	e.m.disp(dispTooManyOptions)
	if msg.Type != coapmsg.Confirmable {
		return
	}
	if !msg.Code.IsRequest() {
		e.sendRST(peer, msg.MID)
		return
	}
	resp := coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.BadRequest, MID: msg.MID, Token: msg.Token, Payload: diagTooManyOptions}
	bp := e.bufs.Get().(*[]byte)
	b, err := resp.Append((*bp)[:0])
	if err == nil {
		e.m.resp(coapmsg.BadRequest)
		e.out.Send(peer, b)
	}
	*bp = b[:0]
	e.bufs.Put(bp)
}

func (e *Endpoint) sendRST(peer netip.AddrPort, mid uint16) {
	b := [4]byte{1<<6 | byte(coapmsg.Reset)<<4, 0, byte(mid >> 8), byte(mid)}
	e.m.rst.Inc()
	e.out.Send(peer, b[:])
}

// ResponseWriter carries one exchange's response back to the peer.
type ResponseWriter struct {
	e        *Endpoint
	peer     netip.AddrPort
	key      dedupKey
	seq      uint32
	con      bool
	deferred bool
	mid      uint16
	tkl      uint8
	token    [coapmsg.MaxTokenLen]byte
	arrived  int64
	reqSize  int
	verified bool // the peer proved its address: a DTLS identity, or PeerVerified
	state    atomic.Uint32
	req      Request    // valid during ServeCoAP only
	blk      blockState // block options of the response (block2.go)
	att      []byte     // the payload a 2.xx answer carries (attach.go)
	obs      *observer  // a CON notification's observer (observe.go)
	attCF    uint16

	nopt uint8
	used uint8
	opts [maxRespOpts]respOpt // the options set so far, their values in obuf
	obuf [16]byte

	// separate CON response retransmission state, guarded by Endpoint.mu
	sep      []byte
	sepMID   uint16
	sepTries int
	sepNext  int64
	sepWait  int64
	sepMax   int // retransmissions allowed: MaxRetransmit, fewer for an unverified peer
}

// maxRespOpts is how many options a response can carry.
const maxRespOpts = 4

// respOpt is a response option whose value is w.obuf[off:off+n]: 4 bytes instead of an Option's
// 32, as every exchange carries room for maxRespOpts of them.
type respOpt struct {
	num    uint16
	off, n uint8
}

const (
	wsNew      = iota // no response yet
	wsDone            // response sent (piggybacked, NON, or separate)
	wsEmptyAck        // empty ACK sent; the response will follow as a separate CON
)

// RequestSize is the length of the request datagram in bytes: what a response to an unverified
// peer is measured against (MaxAmplification).
func (w *ResponseWriter) RequestSize() int { return w.reqSize }

// Peer is the address the request came from.
func (w *ResponseWriter) Peer() netip.AddrPort { return w.peer }

// PeerVerified tells the endpoint that the peer has proven it receives at its address (a valid
// Echo option, RFC 9175), so that a separate response is retransmitted as often as RFC 7252 says
// however small the request was (see sendSeparate). A request from a DTLS session (Identity not
// empty) is verified already. It must be called before Respond.
func (w *ResponseWriter) PeerVerified() { w.verified = true }

// Confirmable reports whether the request is a CON (false: a NON).
func (w *ResponseWriter) Confirmable() bool { return w.con }

// Drop ends a NON exchange without a response (RFC 7252 §5.2.3 lets a server leave a NON
// unanswered); its duplicates are ignored as usual. It must not be used for a CON, which always
// gets an answer: Drop answers a CON with 5.03.
func (w *ResponseWriter) Drop() {
	if w.con {
		w.Respond(coapmsg.ServiceUnavailable, nil)
		return
	}
	if w.state.CompareAndSwap(wsNew, wsDone) {
		w.e.inflight.Add(-1)
		w.e.dedup.finish(w.key, w.seq, stateDone, nil)
	}
}

// Defer tells the endpoint that Respond will be called after ServeCoAP returns.
func (w *ResponseWriter) Defer() { w.deferred = true }

// SetOption adds a response option (at most 4, values at most 16 bytes in all).
func (w *ResponseWriter) SetOption(num uint16, val []byte) {
	if int(w.nopt) == len(w.opts) || int(w.used)+len(val) > len(w.obuf) {
		w.e.log.Error("response option dropped", "option", num)
		return
	}
	n := copy(w.obuf[w.used:], val)
	w.opts[w.nopt] = respOpt{num: num, off: w.used, n: uint8(n)}
	w.used += uint8(n)
	w.nopt++
}

// SetUintOption adds a uint-valued option such as Content-Format, Max-Age or Size1.
func (w *ResponseWriter) SetUintOption(num uint16, v uint32) {
	var b [4]byte
	w.SetOption(num, coapmsg.AppendUint(b[:0], v))
}

// options sorts the options set so far by number (a stable insertion sort over at most 4), as
// the encoding needs, and puts them as Options in dst, their values aliasing w.obuf; it returns
// how many.
func (w *ResponseWriter) options(dst []coapmsg.Option) int {
	for i := 1; i < int(w.nopt); i++ {
		for j := i; j > 0 && w.opts[j].num < w.opts[j-1].num; j-- {
			w.opts[j], w.opts[j-1] = w.opts[j-1], w.opts[j]
		}
	}
	for i, o := range w.opts[:w.nopt] {
		end := int(o.off) + int(o.n)
		dst[i] = coapmsg.Option{Number: o.num, Value: w.obuf[o.off:end:end]}
	}
	return int(w.nopt)
}

// message is the response Respond sends for code and payload, of type t and Message ID mid,
// with the options set so far and, for block-wise transfer, its block options and the block of
// payload it carries (block2.go). opts, of maxRespOpts + blockOpts, holds the message's options.
func (w *ResponseWriter) message(t coapmsg.Type, mid uint16, code coapmsg.Code, payload []byte, opts []coapmsg.Option) coapmsg.Message {
	k := w.options(opts)
	if w.blk.flags != 0 || len(payload) > w.e.sliceAbove {
		var off, n int
		var diag []byte
		code, k, off, n, diag = w.blockResponse(code, opts, k, len(payload))
		if off < 0 {
			payload = diag
		} else {
			if n < len(payload) {
				w.e.m.block2Responses.Inc()
			}
			payload = payload[off : off+n]
		}
	}
	return coapmsg.Message{Type: t, Code: code, MID: mid, Token: w.token[:w.tkl], Options: opts[:k], Payload: payload}
}

// Size is the length in bytes of the piggybacked or NON response Respond would send with the
// options set so far, the extra ones and a payload of payloadLen bytes. Handlers compare it with
// RequestSize to keep responses to unverified peers from amplifying their requests (RFC 7252
// §11.3).
//
// A 2.xx payload larger than a block is measured as the block Respond would send of it, with
// its block options (block2.go).
func (w *ResponseWriter) Size(payloadLen int, extra ...coapmsg.Option) int {
	return w.size(coapmsg.Content, payloadLen, extra...)
}

// size is Size for a response of code.
func (w *ResponseWriter) size(code coapmsg.Code, payloadLen int, extra ...coapmsg.Option) int {
	var opts [maxRespOpts + blockOpts + 8]coapmsg.Option
	k := w.options(opts[:])
	k += copy(opts[k:len(opts)-blockOpts], extra)
	sortOptions(opts[:k], int(w.nopt))
	if w.blk.flags != 0 || payloadLen > w.e.sliceAbove {
		var off int
		var diag []byte
		_, k, off, payloadLen, diag = w.blockResponse(code, opts[:], k, payloadLen)
		if off < 0 {
			payloadLen = len(diag)
		}
	}
	return w.encodedLen(opts[:], k, k, payloadLen)
}

// Respond sends the response. Only the first call has an effect.
func (w *ResponseWriter) Respond(code coapmsg.Code, payload []byte) {
	e := w.e
	for {
		st := w.state.Load()
		if st == wsDone {
			return
		}
		if w.state.CompareAndSwap(st, wsDone) {
			e.m.resp(code)
			if payload == nil && w.att != nil {
				payload = w.attachment(code, st == wsEmptyAck)
			}
			if st == wsEmptyAck {
				e.sendSeparate(w, code, payload)
				e.inflight.Add(-1)
				return
			}
			break
		}
	}
	// The request is in flight until its answer is handed to the Sender: Shutdown waits for
	// in-flight requests and then closes the sender, which must not drop the answer.
	defer e.inflight.Add(-1)
	var opts [maxRespOpts + blockOpts]coapmsg.Option
	var m coapmsg.Message
	if w.con {
		m = w.message(coapmsg.Acknowledgement, w.mid, code, payload, opts[:])
	} else {
		m = w.message(coapmsg.NonConfirmable, e.nextMID(), code, payload, opts[:])
	}
	bp := e.bufs.Get().(*[]byte)
	b, err := m.Append((*bp)[:0])
	if err != nil {
		e.log.Error("encode response", "err", err)
	}
	e.dedup.finish(w.key, w.seq, stateDone, b)
	e.out.Send(w.peer, b)
	*bp = b[:0]
	e.bufs.Put(bp)
}
