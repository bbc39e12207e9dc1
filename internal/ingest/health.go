package ingest

import (
	"fmt"
	"math"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/record"
)

// health serves GET /health: 2.05 with the gateway's status, spool depth, lag and version as
// JSON, or as a CBOR map with the same keys to a request with Accept 60 (a constrained device
// that reads CBOR), after an Echo round trip if the answer would amplify the request
// (amplification.go).
func (h *Handler) health(w *coapserver.ResponseWriter, r *coapserver.Request) {
	st := h.spool.Stats()
	status := "ok"
	if h.draining.Load() {
		status = "draining"
	}
	var lag time.Duration
	if h.cfg.Lag != nil {
		lag = h.cfg.Lag()
	}
	cf := uint16(record.FormatJSON)
	var body []byte
	if a, ok := r.Accept(); ok && a == record.FormatCBOR {
		cf = record.FormatCBOR
		var err error
		body, err = healthCBOR.Marshal(healthBody{status, st.Depth, math.Round(lag.Seconds()*1000) / 1000, h.cfg.Version})
		if err != nil { // cannot happen: strings and numbers
			w.Respond(coapmsg.InternalServerError, nil)
			return
		}
	} else {
		body = fmt.Appendf(nil, `{"status":%q,"spool_depth":%d,"lag_seconds":%.3f,"version":%q}`, status, st.Depth, lag.Seconds(), h.cfg.Version)
	}
	if !h.verified(w, r, len(body), cf) {
		return
	}
	w.SetUintOption(coapmsg.ContentFormat, uint32(cf))
	w.Respond(coapmsg.Content, body)
}

// healthCBOR writes a float at the shortest width that holds it exactly (a lag of 0 or 0.5 s is a
// 3-byte half, not a 9-byte double), as a device's own encoder would.
var healthCBOR = func() cbor.EncMode {
	em, err := cbor.EncOptions{ShortestFloat: cbor.ShortestFloat16}.EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// healthBody is /health's answer in CBOR: the JSON answer's keys, in its order.
type healthBody struct {
	Status     string  `cbor:"status"`
	SpoolDepth int64   `cbor:"spool_depth"`
	LagSeconds float64 `cbor:"lag_seconds"`
	Version    string  `cbor:"version"`
}
