package httpapi

import (
	"context"
	"net/http"

	"github.com/coapgw/coapgw/internal/registry"
)

// SetAsideStore is the part of the registry behind the grouped set-aside records
// (implemented by *registry.Registry); the routes exist when the Store implements it.
type SetAsideStore interface {
	SetAsideReasons(ctx context.Context) ([]registry.SetAsideReason, error)
	DismissSetAsides(ctx context.Context, reason string) (int64, error)
}

type reasonsBody struct {
	Reasons []registry.SetAsideReason `json:"reasons"`
}

// handleReasons is GET /api/errors/reasons: the set-aside records held, counted by reason.
func (a *API) handleReasons(ss SetAsideStore) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !noParams(w, r) {
			return
		}
		ctx, cancel := a.ctx(r)
		defer cancel()
		reasons, err := ss.SetAsideReasons(ctx)
		if err != nil {
			a.storeError(w, r, "set-aside reasons", err)
			return
		}
		if reasons == nil {
			reasons = []registry.SetAsideReason{}
		}
		writeJSON(w, http.StatusOK, reasonsBody{Reasons: reasons})
	}
}

type dismissBody struct {
	Dismissed int64 `json:"dismissed"`
}

// handleDismiss is DELETE /api/errors?reason=...: it deletes the set-aside records with that
// exact reason and answers {"dismissed": n}. A write: it always needs the token.
func (a *API) handleDismiss(ss SetAsideStore) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := parseQuery(r.URL.RawQuery, "reason")
		if err == nil && q.get("reason") == "" {
			writeError(w, http.StatusBadRequest, "reason is required: the exact reason of the records to dismiss")
			return
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		ctx, cancel := a.ctx(r)
		defer cancel()
		n, err := ss.DismissSetAsides(ctx, q.get("reason"))
		if err != nil {
			a.storeError(w, r, "set-aside records", err)
			return
		}
		a.log.Info("set-aside records dismissed through the API", "reason", q.get("reason"), "records", n, "remote", r.RemoteAddr)
		writeJSON(w, http.StatusOK, dismissBody{Dismissed: n})
	}
}

// RetryStore is the part of the registry that retries set-aside records (implemented by
// *registry.Registry); the route exists when the Store implements it.
type RetryStore interface {
	RetrySetAsides(ctx context.Context, sel registry.RetrySelection) (registry.RetryResult, error)
}

// handleRetry is POST /api/errors/retry?reason=... (every record with that exact reason) or
// ?gw=...&seq=N (one record): the records go through the registry's apply step again
// (registry.RetrySetAsides); each is applied, or set aside again with the new reason. It answers
// {"applied": a, "setAside": s, "skipped": k}, 404 when no record matches, announces the things
// that had a record applied on the event stream and tells Config.OnRetried. A write: it always
// needs the token.
func (a *API) handleRetry(rs RetryStore) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := parseQuery(r.URL.RawQuery, "reason", "gw", "seq")
		var sel registry.RetrySelection
		if err == nil {
			sel, err = q.retrySelection()
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		ctx, cancel := a.ctx(r)
		defer cancel()
		res, err := rs.RetrySetAsides(ctx, sel)
		if err != nil {
			a.storeError(w, r, "set-aside records", err)
			return
		}
		a.log.Info("set-aside records retried through the API", "reason", sel.Reason, "gw", sel.GW, "seq", sel.Seq,
			"applied", res.Applied, "set_aside_again", res.SetAside, "skipped", res.Skipped, "remote", r.RemoteAddr)
		if len(res.Things) > 0 {
			names := make([]string, len(res.Things))
			for i, t := range res.Things {
				names[i] = t.Name
			}
			if a.cfg.OnRetried != nil {
				a.cfg.OnRetried(res.Things)
			}
			a.Notify(names...)
		}
		writeJSON(w, http.StatusOK, res)
	}
}
