package ingest

import (
	"errors"
	"sync"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/jsonscan"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
)

// validate is the first step of telemetry (pipeline.go): it answers 4.00, 4.13 or 4.15 to a
// POST or PUT for a valid /{type}/{id} whose payload is not a JSON object, or a CBOR (or SenML)
// one whose JSON form (record.ToJSON) is not, and passes the rest on. The shadow rules apply to
// the JSON form (a CBOR map's conversion keeps them itself), so they are the same whatever format
// the device chose.
func (h *Handler) validate(next coapserver.Handler) coapserver.Handler {
	return coapserver.HandlerFunc(func(w *coapserver.ResponseWriter, r *coapserver.Request) {
		switch {
		case r.NumPath() != 2:
			h.reject(w, coapmsg.BadRequest, "path must be /{type}/{id}")
		case !record.ValidName(r.Path(0)):
			h.reject(w, coapmsg.BadRequest, "type must match [a-zA-Z0-9:_-]{1,128}")
		case !record.ValidName(r.Path(1)):
			h.reject(w, coapmsg.BadRequest, "id must match [a-zA-Z0-9:_-]{1,128}")
		case !record.Accepted(contentFormat(r)):
			h.reject(w, coapmsg.UnsupportedFormat, record.ErrFormat.Error())
		case len(r.Payload()) > h.cfg.MaxPayload:
			w.SetUintOption(coapmsg.Size1, uint32(h.cfg.MaxPayload))
			h.reject(w, coapmsg.RequestEntityTooLarge, "payload too large")
		case len(r.Payload()) == 0:
			h.reject(w, coapmsg.BadRequest, "empty payload: want a JSON object")
		default:
			if err := h.checkPayload(r); err != nil {
				msg := err.Error()
				if len(msg) > 64 {
					msg = msg[:64]
				}
				h.reject(w, coapmsg.BadRequest, msg)
				return
			}
			next.ServeCoAP(w, r)
		}
	})
}

// checkPayload applies validate's payload rules: r's payload, of an accepted Content-Format, must
// stand for a JSON object (record.ToJSON) that keeps the shadow rules and maxDepth.
func (h *Handler) checkPayload(r *coapserver.Request) error {
	cf := contentFormat(r)
	if cf == record.FormatSenMLJSON || cf == record.FormatSenMLCBOR {
		// A pack's JSON form is one flat object whose only rule to check is in its string
		// values: the readings tell without building it and scanning it again.
		pk := senmlPacks.Get().(*record.SenMLPack)
		keeps, err := pk.Check(cf, r.Payload(), r.Received.UnixNano())
		sure := err == nil && keeps && h.cfg.MaxDepth >= 1
		senmlPacks.Put(pk)
		if err != nil || sure {
			return err
		}
	}
	bp := h.bufs.Get().(*[]byte)
	var js []byte
	var err error
	if cf == record.FormatCBOR { // the conversion keeps the rules itself: no JSON form to scan
		js, err = record.CheckCBOR((*bp)[:0], r.Payload(), h.cfg.MaxDepth)
	} else {
		js, err = record.ToJSON((*bp)[:0], cf, r.Payload(), h.cfg.MaxDepth, r.Received.UnixNano())
		if err == nil {
			keys := h.keys.Get().(*jsonscan.Keys)
			err = scanPayload(js, h.cfg.MaxDepth, keys)
			keys.Reset(nil)
			h.keys.Put(keys)
		}
	}
	if cf != record.FormatJSON && cf != record.NoContentFormat && cap(js) > cap(*bp) {
		*bp = js[:0] // grown by the conversion; a JSON payload is the request's own
	}
	h.bufs.Put(bp)
	return err
}

// senmlPacks are checkPayload's reusable SenML readings.
var senmlPacks = sync.Pool{New: func() any { return new(record.SenMLPack) }}

// contentFormat is the request's Content-Format as the record stores it: record.NoContentFormat
// when it had none (so a request claiming 65535, which the record cannot tell from none, is
// taken as one without).
func contentFormat(r *coapserver.Request) uint16 {
	if cf, ok := r.ContentFormat(); ok {
		return cf
	}
	return record.NoContentFormat
}

// store is the last step of telemetry: it encodes the record and appends it to the spool. The
// answer goes out when the spool (and AfterStored) says how it went, usually after ServeCoAP
// returned.
func (h *Handler) store(w *coapserver.ResponseWriter, r *coapserver.Request) {
	bp := h.bufs.Get().(*[]byte)
	b := record.AppendHeader((*bp)[:0], r.Received.UnixNano(), contentFormat(r), h.cfg.GatewayID)
	b = record.AppendField(b, r.Path(0))
	b = record.AppendField(b, r.Path(1))
	b = record.AppendPeer(b, r.Peer)
	b = record.AppendPayload(b, r.Payload())
	w.Defer()
	wt := h.waits.Get().(*waiting)
	wt.w = w
	if h.shadows != nil { // thingCheck counted the record in its thing's budget
		wt.thing = h.things.get(r.Path(1))
	}
	err := h.spool.Append(b, wt.stored)
	*bp = b[:0]
	h.bufs.Put(bp)
	if err != nil { // the spool will not call wt.stored
		if wt.thing != nil {
			wt.thing.settle(h.shadows, 0, err)
		}
		wt.w, wt.thing = nil, nil
		h.waits.Put(wt)
		h.noteAppend(err)
		h.done(w, err)
	}
}

// waiting is one request waiting for the spool to call back. They are pooled with their callback
// bound, so that the wait allocates nothing.
type waiting struct {
	h      *Handler
	w      *coapserver.ResponseWriter
	thing  *thingEntry                 // with a shadow budget: the record's thing
	stored func(seq uint64, err error) // the spool's done callback: onStored
}

func (h *Handler) newWaiting() *waiting {
	wt := &waiting{h: h}
	wt.stored = wt.onStored
	return wt
}

// onStored is called by the spool exactly once per Append that returned nil.
func (wt *waiting) onStored(seq uint64, err error) {
	h, w := wt.h, wt.w
	if wt.thing != nil {
		wt.thing.settle(h.shadows, seq, err)
	}
	wt.w, wt.thing = nil, nil
	h.waits.Put(wt)
	h.noteAppend(err)
	if err != nil || h.cfg.AfterStored == nil {
		h.done(w, err)
		return
	}
	if err := h.cfg.AfterStored(seq, func(err error) { h.done(w, err) }); err != nil {
		h.done(w, err)
	}
}

// done answers a request whose record was stored (err nil) or could not be.
func (h *Handler) done(w *coapserver.ResponseWriter, err error) {
	if err == nil {
		h.accepted.Add(1)
		h.results[resAccepted].Inc()
		w.Respond(coapmsg.Changed, nil)
		return
	}
	var diag string
	if errors.Is(err, spool.ErrFull) {
		h.results[resFull].Inc()
		diag = "spool full"
	} else if h.cfg.AfterStored != nil && !errors.Is(err, spool.ErrUnavailable) && !errors.Is(err, spool.ErrClosed) {
		h.results[resQueue].Inc() // logged once per run of failures by AfterStored's owner
		diag = "queue unavailable"
	} else {
		h.results[resError].Inc() // logged once per change of state: noteAppend
		diag = "storage unavailable"
	}
	h.unavailable(w, diag)
}

// unavailable answers 5.03 with Max-Age (--retry-after) and a short diagnostic: nothing was
// stored, the device should send again later.
func (h *Handler) unavailable(w *coapserver.ResponseWriter, diag string) {
	w.SetUintOption(coapmsg.MaxAge, uint32(h.cfg.RetryAfter))
	w.Respond(coapmsg.ServiceUnavailable, h.diagnostic(w, []byte(diag)))
}

// limited answers a device over its --device-rate: 5.03 with Max-Age, the whole seconds until it
// may send again, for a CON; nothing for a NON.
func (h *Handler) limited(w *coapserver.ResponseWriter, wait time.Duration) {
	h.results[resLimited].Inc()
	if !w.Confirmable() {
		w.Drop()
		return
	}
	w.SetUintOption(coapmsg.MaxAge, uint32(max(1, (wait+time.Second-1)/time.Second)))
	w.Respond(coapmsg.ServiceUnavailable, h.diagnostic(w, []byte("device over its rate limit")))
}

func (h *Handler) reject(w *coapserver.ResponseWriter, code coapmsg.Code, diag string) {
	h.results[resRejected].Inc()
	w.Respond(code, h.diagnostic(w, []byte(diag)))
}
