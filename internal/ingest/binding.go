package ingest

import (
	"context"
	"fmt"
	"net"
	"net/netip"

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

// DefaultPlainPolicy is the policy when none is set: PlainUnbound once a credential source is
// configured, PlainOpen (a first local run) otherwise.
func DefaultPlainPolicy(haveCredentials bool) string {
	if haveCredentials {
		return PlainUnbound
	}
	return PlainOpen
}

// ValidatePlainPolicy checks a --plain-coap value ("" is the default): PlainUnbound needs a
// credential source.
func ValidatePlainPolicy(policy string, haveCredentials bool) error {
	switch policy {
	case "", PlainOpen, PlainOff:
	case PlainUnbound:
		if !haveCredentials {
			return fmt.Errorf("plain CoAP policy %q needs a credential source (per-device or fleet keys)", PlainUnbound)
		}
	default:
		return fmt.Errorf("plain CoAP policy %q: want %s, %s or %s", policy, PlainOpen, PlainUnbound, PlainOff)
	}
	return nil
}

// PlainWarning is the warning to log at start when plain CoAP is open to other hosts: policy
// PlainOpen on an address that is not loopback (addr as given to the listener, ":5683" being
// every interface). It is "" when there is nothing to warn about.
func PlainWarning(policy, addr string) string {
	if policy == "" {
		policy = PlainOpen
	}
	if policy != PlainOpen {
		return ""
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return ""
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		return ""
	}
	return "plain CoAP is open on " + addr + ": any host that can reach it can write telemetry for any thing; " +
		"use --plain-coap unbound (with device credentials) or off"
}

// plainPolicy is Config.PlainPolicy with its default filled in, checked.
func plainPolicy(cfg *Config) error {
	if err := ValidatePlainPolicy(cfg.PlainPolicy, cfg.Credentials != nil); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	if cfg.PlainPolicy == "" {
		cfg.PlainPolicy = DefaultPlainPolicy(cfg.Credentials != nil)
	}
	return nil
}

// boundBytes is Store.Bound without the strings, which the stores of internal/credential have:
// it keeps the plain CoAP path free of allocations.
type boundBytes interface {
	BoundBytes(typ, thing []byte) (bool, error)
}

// bound asks the credential store whether typ/thing has a credential.
func (h *Handler) bound(typ, thing []byte) (bool, error) {
	if bb, ok := h.cfg.Credentials.(boundBytes); ok {
		return bb.BoundBytes(typ, thing)
	}
	return h.cfg.Credentials.Bound(context.Background(), string(typ), string(thing))
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
			bound, err := h.bound(r.Path(0), r.Path(1))
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
	w.Respond(code, h.diagnostic(w, []byte(diag)))
}
