package ingest

import (
	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/record"
)

// pipeline assembles the device API, and is the one place that says in which order a request
// meets its parts. Every step either answers the request or hands it to the next:
//
//	(coapserver: option checks, 4.02 and 5.05, and Block1 bodies reassembled, before any of this)
//	router       /.well-known/core, /health: GET only, acceptable Accept (/health: JSON or
//	             CBOR), then the resource;
//	             POST and PUT (--compat seed: and GET with a payload): telemetry; local mode,
//	             GET /{type}/{id}: bind, then the thing's pending change (downlink.go); else
//	             4.05 or 4.04
//	telemetry:
//	  received   --compat seed: RECEIVED OK attached for the 2.04 to carry (compat.go)
//	  validate   /{type}/{id}, names, Content-Format, size, JSON object and the shadow rules:
//	             4.00, 4.13, 4.15
//	  jsonOnly   --envelope seed: 4.15 for a payload that is not JSON (compat.go)
//	  bind       DTLS: only the identity's own /{type}/{id}, else 4.03; plain CoAP: 4.01 for a
//	             thing with a credential (--plain-coap unbound) or any (off)
//	  drain      5.03 once Drain was called
//	  rateLimit  5.03 with Max-Age beyond --device-rate, per identity (DTLS) or per /{type}/{id}
//	  thingCheck 5.03 for a new thing beyond --max-things; local mode: 4.00 for a thing that
//	             exists with another type, 4.13 for a record its shadow cannot take, 5.03 "thing
//	             busy" while that cannot be known (applicable.go)
//	  downlink   local mode, with Accept: 50: the thing's pending desired-state change attached
//	             to the exchange, for the 2.04 to carry (downlink.go)
//	  store      record to the spool; 2.04, or 5.03, once the spool has answered
//
// Telemetry is validated first, so that a malformed request gets its 4.xx whatever state the
// gateway is in and costs its device nothing; the middleware after it sees only well-formed
// telemetry for a valid /{type}/{id}.
func (h *Handler) pipeline() coapserver.Handler {
	telemetry := chain(coapserver.HandlerFunc(h.store),
		h.received,   // --compat seed: the 2.04 carries RECEIVED OK
		h.validate,   // path, names, Content-Format, size, JSON object: 4.00, 4.13, 4.15
		h.jsonOnly,   // --envelope seed: 4.15 for CBOR and SenML
		h.bind,       // 4.03 for another identity's thing, 4.01 for plain CoAP a thing may not use
		h.drain,      // 5.03 "gateway shutting down" once Drain was called
		h.rateLimit,  // 5.03 with Max-Age (a NON: dropped) beyond --device-rate
		h.thingCheck, // --max-things 5.03; local mode: another type 4.00, shadow too big 4.13
		h.downlink,   // local mode, Accept: 50: the thing's delta rides in the 2.04
	)
	rt := &router{
		wellKnown: getOnly(coapserver.HandlerFunc(h.wellKnown), coapmsg.FormatLinkFormat),
		health:    getOnly(coapserver.HandlerFunc(h.health), record.FormatJSON, record.FormatCBOR),
		telemetry: telemetry,
	}
	if h.cfg.CompatSeed {
		rt.getTelemetry = h.countGET(telemetry)
	}
	if h.cfg.Deltas != nil {
		rt.thing = chain(getOnly(coapserver.HandlerFunc(h.getThing), record.FormatJSON, record.FormatCBOR),
			h.bind, // a device reads only its own thing, as it writes only its own
		)
	}
	return rt
}

// chain wraps h in mw, mw[0] outermost: a request meets mw[0] first and h last.
func chain(h coapserver.Handler, mw ...coapserver.Middleware) coapserver.Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// drain answers 5.03 "gateway shutting down" once Drain was called: nothing more is stored.
func (h *Handler) drain(next coapserver.Handler) coapserver.Handler {
	return coapserver.HandlerFunc(func(w *coapserver.ResponseWriter, r *coapserver.Request) {
		if h.draining.Load() {
			h.results[resDraining].Inc()
			h.unavailable(w, "gateway shutting down")
			return
		}
		next.ServeCoAP(w, r)
	})
}

// rateLimit is --device-rate: a token bucket per device (limit.go), keyed on the authenticated
// identity for DTLS and on the /{type}/{id} for plain CoAP (whose sender is unproven), so that a
// peer spoofing a device's name over plain CoAP cannot use up the device's budget. Without a rate
// it is no step at all.
func (h *Handler) rateLimit(next coapserver.Handler) coapserver.Handler {
	if h.limit == nil {
		return next
	}
	return coapserver.HandlerFunc(func(w *coapserver.ResponseWriter, r *coapserver.Request) {
		var k uint64
		if r.Identity != "" {
			k = h.limit.identityKey(r.Identity)
		} else {
			k = h.limit.key(r.Path(0), r.Path(1))
		}
		if ok, wait := h.limit.allowKey(k, r.Received.UnixNano()); !ok {
			h.limited(w, wait)
			return
		}
		next.ServeCoAP(w, r)
	})
}
