package coapserver

import (
	"net/netip"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// Separate responses (RFC 7252 §5.2.2): the empty ACK for a late exchange, the separate CON
// response, its retransmissions, and the peer's ACK or RST that ends them.

func (e *Endpoint) matchOutstanding(peer netip.AddrPort, msg *coapmsg.Message) {
	if msg.Code != coapmsg.Empty && msg.Type == coapmsg.Reset {
		return
	}
	if msg.Type == coapmsg.Reset {
		e.observerReset(peer, msg.MID) // a notification rejected: the observer is gone
	}
	k := outKey{peer: makePeerKey(peer), mid: msg.MID}
	e.mu.Lock()
	w := e.outstanding[k]
	delete(e.outstanding, k)
	e.mu.Unlock()
	if w != nil && w.obs != nil && msg.Type == coapmsg.Acknowledgement {
		e.observerAcked(w)
	}
	switch {
	case w == nil:
	case msg.Type == coapmsg.Reset:
		e.m.separateRejected.Inc()
	default:
		e.m.separateAcked.Inc()
	}
}

// timers sends empty ACKs for deferred exchanges past the piggyback deadline and retransmits
// separate CON responses until ACK, RST or MAX_RETRANSMIT.
func (e *Endpoint) timers() {
	defer e.wg.Done()
	tick := time.NewTicker(e.opts.PiggybackDeadline / 4)
	defer tick.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-tick.C:
		}
		e.tick()
		e.sweepObservers(e.now())
		if e.bodies != nil {
			e.bodies.expireAll(e.now())
		}
	}
}

func (e *Endpoint) tick() {
	now := e.now()
	deadline := int64(e.opts.PiggybackDeadline)
	var late []*ResponseWriter
	e.mu.Lock()
	for e.pending.len() > 0 {
		w := e.pending.front()
		if w.state.Load() != wsNew {
			e.pending.pop()
			continue
		}
		if now-w.arrived < deadline {
			break
		}
		e.pending.pop()
		late = append(late, w)
	}
	var resend, gone []*ResponseWriter
	for k, w := range e.outstanding { // separate responses and CON notifications, bounded
		if now < w.sepNext {
			continue
		}
		if w.sepTries >= w.sepMax {
			delete(e.outstanding, k)
			e.m.separateGaveUp.Inc()
			if w.obs != nil {
				gone = append(gone, w)
			}
			continue
		}
		w.sepTries++
		w.sepWait *= 2
		w.sepNext = now + w.sepWait
		resend = append(resend, w)
	}
	e.mu.Unlock()
	for _, w := range late {
		if w.state.CompareAndSwap(wsNew, wsEmptyAck) {
			b := [4]byte{1<<6 | byte(coapmsg.Acknowledgement)<<4, 0, byte(w.mid >> 8), byte(w.mid)}
			e.dedup.finish(w.key, w.seq, stateEmptyAck, b[:])
			e.m.emptyAcks.Inc()
			e.out.Send(w.peer, b[:])
		}
	}
	for _, w := range resend {
		e.m.separateRetransmits.Inc()
		e.out.Send(w.peer, w.sep)
	}
	for _, w := range gone {
		e.observerGone(w)
	}
}

// sendSeparate sends a late response as a separate CON and has tick retransmit it until the peer
// ACKs it or rejects it, or it has been retransmitted w.sepMax times.
//
// Amplification (RFC 7252 §11.3): everything sent for one request to a peer whose address is not
// verified — the empty ACK, the separate response and each of its retransmissions — stays within
// MaxAmplification times the request datagram. The separate response goes out as many times as
// fit in what the empty ACK left of that budget, at most 1 + MaxRetransmit; if not even once, it
// is not sent. Each such cut is counted (separate_limited).
func (e *Endpoint) sendSeparate(w *ResponseWriter, code coapmsg.Code, payload []byte) {
	w.sepMID = e.nextMID()
	var opts [maxRespOpts + blockOpts]coapmsg.Option
	m := w.message(coapmsg.Confirmable, w.sepMID, code, payload, opts[:])
	b, err := m.Append(nil)
	if err != nil {
		e.log.Error("encode separate response", "err", err)
		return
	}
	w.sep = b
	w.sepMax = e.opts.MaxRetransmit
	if !w.verified {
		budget := MaxAmplification*w.reqSize - emptyAckLen
		if sends := budget / len(b); sends-1 < w.sepMax {
			e.m.separateLimited.Inc()
			if sends < 1 {
				return
			}
			w.sepMax = sends - 1
		}
	}
	// ACK_TIMEOUT × random factor in [1, 1.5)
	w.sepWait = int64(e.opts.AckTimeout) + int64(e.opts.AckTimeout)/2*int64(w.sepMID%100)/100
	w.sepNext = e.now() + w.sepWait
	e.mu.Lock()
	if len(e.outstanding) < e.opts.MaxOutstanding {
		e.outstanding[outKey{peer: w.key.peer, mid: w.sepMID}] = w
	}
	e.mu.Unlock()
	e.m.separate.Inc()
	e.out.Send(w.peer, b)
}

// emptyAckLen is the length of the empty ACK sent for a late exchange.
const emptyAckLen = 4
