package ingest

import (
	"fmt"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/record"
)

// health serves GET /health: 2.05 with the gateway's status, spool depth, lag and version as
// JSON, after an Echo round trip if the answer would amplify the request (amplification.go).
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
	body := fmt.Sprintf(`{"status":%q,"spool_depth":%d,"lag_seconds":%.3f,"version":%q}`, status, st.Depth, lag.Seconds(), h.cfg.Version)
	if !h.verified(w, r, len(body), record.FormatJSON) {
		return
	}
	w.SetUintOption(coapmsg.ContentFormat, uint32(record.FormatJSON))
	w.Respond(coapmsg.Content, []byte(body))
}
