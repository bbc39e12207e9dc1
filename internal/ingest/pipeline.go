package ingest

import (
	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/record"
)

// pipeline assembles the device API, and is the one place that says in which order a request
// meets its parts. Every step either answers the request or hands it to the next:
//
//	(coapserver: option checks, 4.02 and 5.05, before any of this)
//	router       /.well-known/core, /health: GET only, acceptable Accept, then the resource;
//	             POST and PUT: telemetry; else 4.05 or 4.04
//	telemetry:
//	  validate   /{type}/{id}, names, Content-Format, size, JSON object: 4.00, 4.13, 4.15
//	  (identity binding, when DTLS comes)
//	  drain      5.03 once Drain was called
//	  rateLimit  5.03 with Max-Age beyond --device-rate
//	  store      record to the spool; 2.04, or 5.03, once the spool has answered
//
// Telemetry is validated first, so that a malformed request gets its 4.xx whatever state the
// gateway is in and costs its device nothing; the middleware after it sees only well-formed
// telemetry for a valid /{type}/{id}.
func (h *Handler) pipeline() coapserver.Handler {
	telemetry := chain(coapserver.HandlerFunc(h.store),
		h.validate, // path, names, Content-Format, size, JSON object: 4.00, 4.13, 4.15
		// Identity binding goes here when DTLS comes (a later issue): a session may write only
		// its own thing, checked before it can drain a device's rate budget.
		h.drain,     // 5.03 "gateway shutting down" once Drain was called
		h.rateLimit, // 5.03 with Max-Age (a NON: dropped) beyond --device-rate
	)
	return &router{
		wellKnown: getOnly(coapmsg.FormatLinkFormat, coapserver.HandlerFunc(h.wellKnown)),
		health:    getOnly(record.FormatJSON, coapserver.HandlerFunc(h.health)),
		telemetry: telemetry,
	}
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

// rateLimit is --device-rate: a token bucket per device (limit.go). Without a rate it is no step
// at all.
func (h *Handler) rateLimit(next coapserver.Handler) coapserver.Handler {
	if h.limit == nil {
		return next
	}
	return coapserver.HandlerFunc(func(w *coapserver.ResponseWriter, r *coapserver.Request) {
		if ok, wait := h.limit.allow(r.Path(0), r.Path(1), r.Received.UnixNano()); !ok {
			h.limited(w, wait)
			return
		}
		next.ServeCoAP(w, r)
	})
}
