package ingest

import (
	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/record"
)

// Deltas gives a thing's pending desired-state change (local mode: *registry.Registry; AWS mode:
// *awsdownlink.Downlink, whose first call for a thing may wait a short budget for AWS).
type Deltas interface {
	// Delta returns the message a device gets for the thing named name,
	// {"state":{<delta>},"version":N}, or nil when the thing has no delta. It is called on the
	// telemetry path: it must be cheap and must not allocate. The bytes are not modified.
	Delta(name []byte) []byte
}

// downlink is the step before store (pipeline.go) that puts a thing's pending desired-state
// change into the 2.04 that acknowledges its record. A device opts in by sending its telemetry
// with Accept: 50 (application/json); without Accept (every device before this) the 2.04 stays
// empty. The delta is attached to the exchange (coapserver.ResponseWriter.Attach) before the
// record is stored, so that a 5.03 never carries it and the 2.04 carries what was pending when
// the report arrived: the answer to the report that applies a change may carry that change once
// more (the registry applies records after the device's answer); applying it again changes
// nothing, and the version tells the device it has seen it.
//
// Amplification: a device over DTLS is verified. A plain CoAP device whose 2.04 with the delta
// would be longer than three times its request gets an Echo option (RFC 9175) in the bare 2.04
// instead; when its next report carries that Echo value, it is verified and the delta rides in
// the answer. A delta longer than a block never rides in a 2.04: the device reads it with
// GET /{type}/{id}.
//
// CBOR: a device that asks for Accept: 60 gets the same message in CBOR (deltacbor.go), under
// the same bounds.
func (h *Handler) downlink(next coapserver.Handler) coapserver.Handler {
	if h.cfg.Deltas == nil {
		return next
	}
	return coapserver.HandlerFunc(func(w *coapserver.ResponseWriter, r *coapserver.Request) {
		if a, ok := r.Accept(); ok {
			switch a {
			case record.FormatJSON:
				if d := h.cfg.Deltas.Delta(r.Path(1)); d != nil {
					h.attachDelta(w, r, d, a)
				}
			case record.FormatCBOR:
				if d := h.cfg.Deltas.Delta(r.Path(1)); d != nil {
					if c, err := deltaCBOR(d); err == nil {
						h.attachDelta(w, r, c, a)
					}
				}
			}
		}
		next.ServeCoAP(w, r)
	})
}

// attachDelta attaches d to the exchange, and to an unverified peer whose answer would then
// break the amplification bound, either verifies it with the Echo value its request carries or
// gives it one to send next time.
func (h *Handler) attachDelta(w *coapserver.ResponseWriter, r *coapserver.Request, d []byte, cf uint16) {
	w.Attach(d, cf)
	if r.Identity != "" {
		return
	}
	var v [2]byte
	opt := coapmsg.Option{Number: coapmsg.ContentFormat, Value: coapmsg.AppendUint(v[:0], uint32(cf))}
	if w.Size(len(d), opt) <= maxAmplification*w.RequestSize() {
		return
	}
	if h.validEcho(r.Echo(), r.Peer, r.Received) {
		w.PeerVerified()
		return
	}
	h.echoChallenges.Inc()
	w.SetOption(coapmsg.Echo, h.makeEcho(r.Peer, r.Received))
}

// noDelta is what GET /{type}/{id} answers for a thing without a pending change.
var noDelta = []byte(`{"state":{}}`)

// getThing answers GET /{type}/{id} (after bind): 2.05 with the thing's pending change,
// {"state":{<delta>},"version":N}, or {"state":{}} when it has none; to an unverified peer whose
// request is too small for the answer, 4.01 with an Echo first (amplification.go). JSON, or CBOR
// for a device that asks with Accept: 60 (deltaCBOR); any other Accept gets 4.06 (getOnly).
//
// With Observe 0 the device registers as an observer of its thing (RFC 7641; coapserver's
// observe.go) and gets a notification whenever the delta changes (NotifyThing), in the format
// it asked for: a CBOR observer registers under the thing's name plus cborObserveKey. A GET
// without Observe, or with Observe 1, ends the observation of the same token. Beyond the
// exchange layer's MaxObservers the answer is a plain one, without Observe.
func (h *Handler) getThing(w *coapserver.ResponseWriter, r *coapserver.Request) {
	d := h.thingState(r.Path(1))
	cf, key := uint16(record.FormatJSON), string(r.Path(1))
	if a, ok := r.Accept(); ok && a == record.FormatCBOR {
		c, err := deltaCBOR(d)
		if err != nil {
			w.Respond(coapmsg.InternalServerError, []byte("delta not encodable as CBOR"))
			return
		}
		d, cf, key = c, record.FormatCBOR, key+cborObserveKey
	}
	if r.Identity == "" && !h.verified(w, r, len(d), cf) {
		return
	}
	if v, ok := r.Observe(); ok && v == 0 {
		w.Observe(key, cf, d)
	} else {
		w.Unobserve()
	}
	w.SetUintOption(coapmsg.ContentFormat, uint32(cf))
	w.Respond(coapmsg.Content, d)
}

// cborObserveKey follows a thing's name in the observation key of a device that observes it in
// CBOR (a thing name never holds a slash).
const cborObserveKey = "/cbor"

// thingState is what GET /{type}/{id} returns for the thing named name.
func (h *Handler) thingState(name []byte) []byte {
	if d := h.cfg.Deltas.Delta(name); d != nil {
		return d
	}
	return noDelta
}

// Notifier sends the observers of a resource its new representation
// (coapserver.Endpoint.Notify).
type Notifier func(key string, cf uint16, payload []byte)

// AddNotifier adds an exchange layer whose observers NotifyThing notifies (the gateway adds
// its UDP and DTLS endpoints). Call it before the handler serves.
func (h *Handler) AddNotifier(n Notifier) { h.notifiers = append(h.notifiers, n) }

// NotifyThing tells the observers of the thing named name that its pending change is now
// what Deltas says (local mode: the registry calls it when a thing's delta changed). It must
// not block, and does not: the exchange layer queues the notifications.
func (h *Handler) NotifyThing(name string) {
	if h.cfg.Deltas == nil {
		return
	}
	d := h.thingState([]byte(name))
	for _, n := range h.notifiers {
		n(name, record.FormatJSON, d)
	}
	c, err := deltaCBOR(d) // for CBOR observers; desired state changes seldom
	if err != nil {
		return
	}
	for _, n := range h.notifiers {
		n(name+cborObserveKey, record.FormatCBOR, c)
	}
}
