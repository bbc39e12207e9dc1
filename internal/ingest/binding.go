package ingest

import (
	"context"
	"fmt"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
)

// Plain CoAP policies (Config.PlainPolicy, --plain-coap).
const (
	// PlainOpen accepts plain CoAP for every thing: the behaviour before credentials, and the
	// default when no credential source is configured.
	PlainOpen = "open"
	// PlainUnbound accepts plain CoAP only for things without a credential; a bound thing gets
	// 4.01 "thing requires DTLS". The default when a credential source is configured.
	PlainUnbound = "unbound"
	// PlainOff refuses every plain CoAP write with 4.01 "DTLS required". The wiring does not
	// open the plain port at all; the handler refuses too, should a plain request reach it.
	PlainOff = "off"
)

// plainPolicy is Config.PlainPolicy with its default filled in, checked.
func plainPolicy(cfg *Config) error {
	switch cfg.PlainPolicy {
	case "":
		cfg.PlainPolicy = PlainOpen
		if cfg.Credentials != nil {
			cfg.PlainPolicy = PlainUnbound
		}
	case PlainOpen, PlainOff:
	case PlainUnbound:
		if cfg.Credentials == nil {
			return fmt.Errorf("ingest: plain CoAP policy %q needs a credential source", PlainUnbound)
		}
	default:
		return fmt.Errorf("ingest: plain CoAP policy %q: want %s, %s or %s", cfg.PlainPolicy, PlainOpen, PlainUnbound, PlainOff)
	}
	return nil
}

// bind is identity binding (pipeline.go), after validation and before draining and the rate
// limit, so that a request a device may not make costs that device nothing:
//
//   - an authenticated request (DTLS: Request.Identity "{type}/{thing}") may write only its own
//     /{type}/{thing}; anything else gets 4.03 "identity T/X may write only /T/X";
//   - a plain request (no Identity) gets 4.01 "DTLS required" under the policy "off", and under
//     "unbound" 4.01 "thing requires DTLS" for a thing that has a credential (Store.Bound, which
//     both stores answer from memory).
func (h *Handler) bind(next coapserver.Handler) coapserver.Handler {
	return coapserver.HandlerFunc(func(w *coapserver.ResponseWriter, r *coapserver.Request) {
		if r.Identity != "" {
			if !identityNames(r.Identity, r.Path(0), r.Path(1)) {
				h.unauthorized(w, coapmsg.Forbidden, "identity "+r.Identity+" may write only /"+r.Identity)
				return
			}
			next.ServeCoAP(w, r)
			return
		}
		switch h.cfg.PlainPolicy {
		case PlainOff:
			h.unauthorized(w, coapmsg.Unauthorized, "DTLS required")
			return
		case PlainUnbound:
			bound, err := h.cfg.Credentials.Bound(context.Background(), string(r.Path(0)), string(r.Path(1)))
			if err != nil {
				h.results[resError].Inc()
				h.log.Warn("credential check failed", "err", err)
				h.unavailable(w, "credential check unavailable")
				return
			}
			if bound {
				h.unauthorized(w, coapmsg.Unauthorized, "thing requires DTLS")
				return
			}
		}
		next.ServeCoAP(w, r)
	})
}

// identityNames reports whether identity is typ/thing, without allocating.
func identityNames(identity string, typ, thing []byte) bool {
	n := len(typ)
	return len(identity) == n+1+len(thing) && identity[:n] == string(typ) && identity[n] == '/' &&
		identity[n+1:] == string(thing)
}

// unauthorized answers 4.01 or 4.03 with a diagnostic and counts the request as unauthorized.
func (h *Handler) unauthorized(w *coapserver.ResponseWriter, code coapmsg.Code, diag string) {
	h.results[resUnauthorized].Inc()
	w.Respond(code, w.Diagnostic([]byte(diag)))
}
