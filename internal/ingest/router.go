package ingest

import (
	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/record"
	"slices"
)

// router sends a request to its resource by path and method:
//
//	/.well-known/core, /health   GET (else 4.05), with an Accept they can satisfy (else 4.06)
//	any POST or PUT              telemetry, whose validation answers a path other than /{type}/{id}
//	GET with a payload           --compat seed only: telemetry, as a POST (compat.go)
//	GET /{type}/{id}             local mode: the thing's pending desired-state change (downlink.go)
//	/{type}/{id}, other methods  4.05
//	anything else                4.04
type router struct {
	wellKnown, health, telemetry coapserver.Handler
	thing                        coapserver.Handler // GET /{type}/{id}; nil: 4.05
	getTelemetry                 coapserver.Handler // --compat seed: a GET with a payload; nil: not telemetry
}

func (rt *router) ServeCoAP(w *coapserver.ResponseWriter, r *coapserver.Request) {
	switch m := r.Method(); {
	case r.NumPath() == 2 && string(r.Path(0)) == ".well-known" && string(r.Path(1)) == "core":
		rt.wellKnown.ServeCoAP(w, r)
	case r.NumPath() == 1 && string(r.Path(0)) == "health":
		rt.health.ServeCoAP(w, r)
	case m == coapmsg.POST || m == coapmsg.PUT:
		rt.telemetry.ServeCoAP(w, r)
	case m == coapmsg.GET && rt.getTelemetry != nil && len(r.Payload()) > 0:
		rt.getTelemetry.ServeCoAP(w, r)
	case r.NumPath() == 2 && record.ValidName(r.Path(0)) && record.ValidName(r.Path(1)):
		if m == coapmsg.GET && rt.thing != nil {
			rt.thing.ServeCoAP(w, r)
			return
		}
		w.Respond(coapmsg.MethodNotAllowed, nil)
	default:
		w.Respond(coapmsg.NotFound, nil)
	}
}

// getOnly serves a read-only resource in the content formats cfs (the first one when the request
// has no Accept): 4.05 to a method other than GET, 4.06 to a request that accepts only another
// format.
func getOnly(next coapserver.Handler, cfs ...uint16) coapserver.Handler {
	return coapserver.HandlerFunc(func(w *coapserver.ResponseWriter, r *coapserver.Request) {
		if r.Method() != coapmsg.GET {
			w.Respond(coapmsg.MethodNotAllowed, nil)
			return
		}
		if a, ok := r.Accept(); ok && !slices.Contains(cfs, a) {
			w.Respond(coapmsg.NotAcceptable, nil)
			return
		}
		next.ServeCoAP(w, r)
	})
}
