package coapserver

import (
	"net/netip"
	"sync"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// Observe (RFC 7641), server side. A handler registers the client of a GET as an observer of a
// resource with ResponseWriter.Observe, and the application sends every observer of a resource
// its new representation with Endpoint.Notify. The endpoint keeps, per observer, its peer and
// token and when it last confirmed a notification; per resource, the representation last sent
// (for the keep-alive below). An observer is (peer, token): registering again with the same
// token replaces the registration.
//
//   - Sequence numbers: one 24-bit counter per endpoint, seeded from the clock, so that they
//     increase for every observer of every resource (§4.4).
//   - Notifications are NON, except every ObserveCONEvery-th to an observer, and one after
//     ObserveKeepAlive without a CON, which the endpoint sends by itself with the last
//     representation: a CON is retransmitted as a separate response is (AckTimeout,
//     MaxRetransmit) and an observer that never ACKs it is removed (§4.5). A new notification
//     while a CON is outstanding replaces it, keeping its retransmission count (§4.5.2).
//   - An RST answering a notification (NON or CON) removes the observer (§3.6); so does a GET
//     from it with the same token without Observe, or with Observe 1 (deregister, §3.6):
//     ResponseWriter.Unobserve.
//   - Max-Age of the registration answer and of every notification: ObserveKeepAlive plus a
//     minute, so a client does not take the state for stale between keep-alives.
//   - A representation longer than a block goes as its first block with Block2 (RFC 7959 §3.4):
//     the client GETs the rest.
//   - Bounds: at most ObserversPerResource (8) per resource, a new one replacing the oldest, so
//     that registrations from spoofed addresses cannot take a resource's places for good; at most
//     MaxObservers in all (a registration beyond it is answered as a plain GET,
//     without Observe, and counted); about 760 bytes each when every observer watches its own
//     resource, 7.3 MiB for 10,000 (BenchmarkObserverMemory: go test -run '^$' -bench
//     ObserverMemory -benchtime 3x ./internal/coapserver/).
//
// Observers live in memory: a restarted gateway has none, and sends nothing to the clients that
// observed it before; a client learns it when Max-Age passes without a notification, and
// registers again (RFC 7641 §3.3.1).
//
// Metrics: coapgw_coap_observers (gauge), coapgw_coap_notifications_total{type} (con, non),
// coapgw_coap_observers_removed_total{reason} (rst, timeout, deregistered, replaced),
// coapgw_coap_observers_refused_total (MaxObservers reached).

// ObserversPerResource bounds the observers of one resource: a new registration beyond it
// replaces the one that has gone longest without a CON (counted as removed, reason replaced).
const ObserversPerResource = 8

// Defaults of the Observe options.
const (
	DefaultMaxObservers     = 10_000
	DefaultObserveKeepAlive = 24 * time.Hour
	DefaultObserveCONEvery  = 5
)

type obsID struct {
	peer  peerKey
	tkl   uint8
	token [coapmsg.MaxTokenLen]byte
}

type observer struct {
	id      obsID
	res     *resource
	peer    netip.AddrPort
	since   int   // notifications since the last CON
	lastCON int64 // endpoint time of the registration or the last CON notification
	mid     uint16
	con     *ResponseWriter // the CON notification awaiting its ACK, if any
}

type resource struct {
	key     string
	cf      uint16
	payload []byte
	obs     map[obsID]*observer
}

type observers struct {
	mu        sync.Mutex
	res       map[string]*resource
	byID      map[obsID]*observer
	byMID     map[outKey]*observer
	seq       uint32
	lastSweep int64
}

func (o *observers) init(now time.Time) {
	o.res = map[string]*resource{}
	o.byID = map[obsID]*observer{}
	o.byMID = map[outKey]*observer{}
	o.seq = uint32(now.UnixMilli()/100) & 0xffffff
}

func (o *observers) nextSeq() uint32 {
	o.seq = (o.seq + 1) & 0xffffff
	return o.seq
}

// Observers is the number of observers registered.
func (e *Endpoint) Observers() int {
	e.watch.mu.Lock()
	defer e.watch.mu.Unlock()
	return len(e.watch.byID)
}

// Observe returns the request's Observe option: 0 registers, 1 deregisters (RFC 7641 §2).
func (r *Request) Observe() (v uint32, ok bool) {
	for _, o := range r.Msg.Options {
		if o.Number == coapmsg.Observe {
			v, _ = coapmsg.Uint(o.Value)
			return v, true
		}
	}
	return 0, false
}

// Observe registers the client of this GET as an observer of the resource key, whose current
// representation payload (Content-Format cf) the answer carries: it adds the Observe option
// (a sequence number) and Max-Age to the answer. It reports false, and adds nothing, when
// MaxObservers are registered. Call it before Respond.
func (w *ResponseWriter) Observe(key string, cf uint16, payload []byte) bool {
	e := w.e
	o := &e.watch
	id := w.obsID()
	o.mu.Lock()
	ob := o.byID[id]
	if ob == nil && len(o.byID) >= e.opts.MaxObservers {
		o.mu.Unlock()
		e.m.observersRefused.Inc()
		return false
	}
	if ob != nil && ob.res.key != key {
		o.removeLocked(e, ob)
		ob = nil
	}
	res := o.res[key]
	if res == nil {
		res = &resource{key: key, obs: map[obsID]*observer{}}
		o.res[key] = res
	}
	res.cf, res.payload = cf, append([]byte(nil), payload...)
	if ob == nil && len(res.obs) >= ObserversPerResource {
		// The oldest registration of this resource makes room: registrations from spoofed
		// addresses cannot take its places for good.
		var oldest *observer
		for _, x := range res.obs {
			if oldest == nil || x.lastCON < oldest.lastCON {
				oldest = x
			}
		}
		o.removeLocked(e, oldest)
		e.m.observersRemoved[removedReplaced].Inc()
	}
	if ob == nil {
		ob = &observer{id: id, res: res, peer: w.peer}
		res.obs[id] = ob
		o.byID[id] = ob
		e.m.observers.Inc()
	}
	ob.lastCON, ob.since = e.now(), 0
	seq := o.nextSeq()
	o.mu.Unlock()
	var b [3]byte
	w.SetOption(coapmsg.Observe, coapmsg.AppendUint(b[:0], seq))
	w.SetUintOption(coapmsg.MaxAge, e.observeMaxAge())
	return true
}

// Unobserve removes the observer this request's client and token are, if any: a GET without
// Observe or with Observe 1 (RFC 7641 §3.6).
func (w *ResponseWriter) Unobserve() {
	e := w.e
	e.watch.mu.Lock()
	defer e.watch.mu.Unlock()
	if ob := e.watch.byID[w.obsID()]; ob != nil {
		e.watch.removeLocked(e, ob)
		e.m.observersRemoved[removedDeregistered].Inc()
	}
}

func (w *ResponseWriter) obsID() obsID {
	id := obsID{peer: w.key.peer, tkl: w.tkl}
	copy(id.token[:], w.token[:w.tkl])
	return id
}

func (e *Endpoint) observeMaxAge() uint32 {
	return uint32(e.opts.ObserveKeepAlive/time.Second) + 60
}

// Notify sends every observer of the resource key its new representation payload (2.05,
// Content-Format cf). It copies payload. A resource nobody observes costs a map lookup.
func (e *Endpoint) Notify(key string, cf uint16, payload []byte) {
	o := &e.watch
	o.mu.Lock()
	defer o.mu.Unlock()
	res := o.res[key]
	if res == nil {
		return
	}
	res.cf, res.payload = cf, append([]byte(nil), payload...)
	now := e.now()
	for _, ob := range res.obs {
		e.notify(ob, now, false)
	}
}

// notify sends ob its resource's representation, as a CON if it is due one (or con); o.mu is
// held.
func (e *Endpoint) notify(ob *observer, now int64, con bool) {
	o := &e.watch
	res := ob.res
	con = con || ob.since+1 >= e.opts.ObserveCONEvery || now-ob.lastCON >= int64(e.opts.ObserveKeepAlive)
	var ob3, cf2, ma4, blk3 [4]byte
	opts := make([]coapmsg.Option, 0, 4)
	opts = append(opts, coapmsg.Option{Number: coapmsg.Observe, Value: coapmsg.AppendUint(ob3[:0], o.nextSeq())})
	opts = append(opts, coapmsg.Option{Number: coapmsg.ContentFormat, Value: coapmsg.AppendUint(cf2[:0], uint32(res.cf))})
	opts = append(opts, coapmsg.Option{Number: coapmsg.MaxAge, Value: coapmsg.AppendUint(ma4[:0], e.observeMaxAge())})
	payload := res.payload
	if len(payload) > e.sliceAbove {
		payload = payload[:e.sliceAbove]
		opts = append(opts, coapmsg.Option{Number: coapmsg.Block2, Value: coapmsg.AppendUint(blk3[:0], 1<<3|uint32(e.blockSZX))})
	}
	t := coapmsg.NonConfirmable
	if con {
		t = coapmsg.Confirmable
	}
	mid := e.nextMID()
	m := coapmsg.Message{Type: t, Code: coapmsg.Content, MID: mid, Token: ob.id.token[:ob.id.tkl], Options: opts, Payload: payload}
	b, err := m.Append(nil)
	if err != nil {
		e.log.Error("encode notification", "err", err)
		return
	}
	delete(o.byMID, outKey{peer: ob.id.peer, mid: ob.mid})
	ob.mid = mid
	o.byMID[outKey{peer: ob.id.peer, mid: mid}] = ob
	if !con {
		ob.since++
		e.m.notifications[0].Inc()
		e.out.Send(ob.peer, b)
		return
	}
	ob.since, ob.lastCON = 0, now
	w := &ResponseWriter{e: e, peer: ob.peer, key: dedupKey{peer: ob.id.peer}, verified: true, obs: ob,
		sep: b, sepMID: mid, sepMax: e.opts.MaxRetransmit}
	w.sepWait = int64(e.opts.AckTimeout) + int64(e.opts.AckTimeout)/2*int64(mid%100)/100
	w.sepNext = now + w.sepWait
	e.mu.Lock()
	if old := ob.con; old != nil { // §4.5.2: the new notification replaces the outstanding one
		if _, ok := e.outstanding[outKey{peer: ob.id.peer, mid: old.sepMID}]; ok {
			delete(e.outstanding, outKey{peer: ob.id.peer, mid: old.sepMID})
			w.sepTries, w.sepWait, w.sepNext = old.sepTries, old.sepWait, old.sepNext
		}
	}
	e.outstanding[outKey{peer: ob.id.peer, mid: mid}] = w
	e.mu.Unlock()
	ob.con = w
	e.m.notifications[1].Inc()
	e.out.Send(ob.peer, b)
}

// observerReset removes the observer a notification with this MID went to (RST, §3.6).
func (e *Endpoint) observerReset(peer netip.AddrPort, mid uint16) {
	o := &e.watch
	o.mu.Lock()
	defer o.mu.Unlock()
	if ob := o.byMID[outKey{peer: makePeerKey(peer), mid: mid}]; ob != nil {
		o.removeLocked(e, ob)
		e.m.observersRemoved[removedRST].Inc()
	}
}

// observerGone removes an observer whose CON notification was never acknowledged.
func (e *Endpoint) observerGone(w *ResponseWriter) {
	o := &e.watch
	o.mu.Lock()
	defer o.mu.Unlock()
	if ob := w.obs; ob != nil && ob.con == w && o.byID[ob.id] == ob {
		o.removeLocked(e, ob)
		e.m.observersRemoved[removedTimeout].Inc()
	}
}

// removeLocked forgets ob; o.mu is held.
func (o *observers) removeLocked(e *Endpoint, ob *observer) {
	delete(o.byID, ob.id)
	delete(o.byMID, outKey{peer: ob.id.peer, mid: ob.mid})
	delete(ob.res.obs, ob.id)
	if len(ob.res.obs) == 0 {
		delete(o.res, ob.res.key)
	}
	if ob.con != nil {
		e.mu.Lock()
		delete(e.outstanding, outKey{peer: ob.id.peer, mid: ob.con.sepMID})
		e.mu.Unlock()
		ob.con = nil
	}
	e.m.observers.Dec()
}

// sweepObservers sends the keep-alive CON to every observer without a CON for
// ObserveKeepAlive; it looks at most once a second.
func (e *Endpoint) sweepObservers(now int64) {
	o := &e.watch
	o.mu.Lock()
	defer o.mu.Unlock()
	if now-o.lastSweep < int64(time.Second) {
		return
	}
	o.lastSweep = now
	keep := int64(e.opts.ObserveKeepAlive)
	for _, ob := range o.byID {
		if now-ob.lastCON >= keep && ob.con == nil {
			e.notify(ob, now, true)
		}
	}
}

const (
	removedRST = iota
	removedTimeout
	removedDeregistered
	removedReplaced
	numRemoved
)

var removedNames = [numRemoved]string{"rst", "timeout", "deregistered", "replaced"}

// observerAcked notes that ob acknowledged its CON notification w.
func (e *Endpoint) observerAcked(w *ResponseWriter) {
	e.watch.mu.Lock()
	if w.obs.con == w {
		w.obs.con = nil
	}
	e.watch.mu.Unlock()
}
