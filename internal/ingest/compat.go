package ingest

import (
	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/record"
)

// Compatibility with the 2018 CoAP-to-AWS-IoT ingestor (--compat seed, Config.CompatSeed;
// docs/migrate-from-2018.md). That ingestor put the payload of any request on its queue and
// answered the text "RECEIVED OK", or "FAILURE". Its own example device sends its JSON with
// node-coap's default method, GET, and devices built on it may look for that text. In this mode:
//
//   - a GET with a non-empty payload is telemetry (router.go), exactly as a POST: the same
//     validation, identity binding, limits and spool, and its answer only once the record is
//     durable; coapgw_ingest_get_writes_total counts them. A GET without a payload is what it
//     always is (downlink.go, or 4.05);
//   - every telemetry answer that acknowledges a record, for any method, carries the text
//     RECEIVED OK (Content-Format 0, text/plain), unless the device asked for its delta with
//     Accept: 50 and has one (downlink.go), or the amplification bound leaves it out
//     (coapserver's Attach: a late answer to a very small request);
//   - every error the device API answers carries the text FAILURE instead of its diagnostic.
//     The code stays the right one (4.00, 4.13, 4.15, 5.03 with Max-Age, ...): a device that
//     can read codes still tells a bad request from a full gateway. Errors the exchange layer
//     answers before the device API sees the request (4.02, a Block1 4.08) keep theirs.
//
// The success code is 2.04 Changed for every method, as for a POST (the 2018 ingestor answered
// 2.05 Content to everything; node-coap clients, and devices checking the text, see no
// difference).
//
// Why only here: RFC 7252 §5.8.1 gives GET no request payload semantics; a server may ignore the
// payload of a GET, and a proxy or cache may answer a GET from a stored response without ever
// forwarding it. Storing it as telemetry is a concession to devices that cannot be updated, not
// something a new device should rely on: those send POST (docs/devices.md). Off by default, so
// that a GET stays safe (it changes nothing) and a payload is not silently taken for a write.

var (
	receivedOK = []byte("RECEIVED OK") // the 2018 ingestor's answer to a stored record
	failureMsg = []byte("FAILURE")     // and to one it could not store
)

// formatText is Content-Format 0, text/plain; charset=utf-8.
const formatText = 0

// received is the first step of telemetry with --compat seed: it attaches RECEIVED OK to the
// exchange, which the answer carries if it is a 2.xx (an error never carries it). Without the
// mode it is no step at all.
func (h *Handler) received(next coapserver.Handler) coapserver.Handler {
	if !h.cfg.CompatSeed {
		return next
	}
	return coapserver.HandlerFunc(func(w *coapserver.ResponseWriter, r *coapserver.Request) {
		w.Attach(receivedOK, formatText)
		next.ServeCoAP(w, r)
	})
}

// diagnostic is the payload of an error answer: diag, or FAILURE with --compat seed; nil when
// it would break the amplification bound (coapserver.ResponseWriter.Diagnostic).
func (h *Handler) diagnostic(w *coapserver.ResponseWriter, diag []byte) []byte {
	if h.cfg.CompatSeed {
		diag = failureMsg
	}
	return w.Diagnostic(diag)
}

// countGET counts the GETs with a payload taken as telemetry (coapgw_ingest_get_writes_total),
// so that an operator can tell when no device needs --compat seed any more.
func (h *Handler) countGET(next coapserver.Handler) coapserver.Handler {
	return coapserver.HandlerFunc(func(w *coapserver.ResponseWriter, r *coapserver.Request) {
		h.getWrites.Inc()
		next.ServeCoAP(w, r)
	})
}

// jsonOnly is the step after validate with --envelope seed (Config.JSONOnly): the 2018
// ingestor's queue message carries the payload as a UTF-8 string and no Content-Format, and its
// processor reads it as a JSON object, so only a JSON payload (Content-Format absent or 50)
// travels in it with its meaning. CBOR and SenML get 4.15 before anything is stored, rather
// than a 2.04 for a record no consumer of that queue could read. Without the option it is no
// step at all.
func (h *Handler) jsonOnly(next coapserver.Handler) coapserver.Handler {
	if !h.cfg.JSONOnly {
		return next
	}
	return coapserver.HandlerFunc(func(w *coapserver.ResponseWriter, r *coapserver.Request) {
		if cf := contentFormat(r); cf != record.FormatJSON && cf != record.NoContentFormat {
			h.reject(w, coapmsg.UnsupportedFormat, "content-format must be 50 (JSON) on this gateway")
			return
		}
		next.ServeCoAP(w, r)
	})
}
