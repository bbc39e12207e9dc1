package httpapi

import (
	"net/http"
)

// handleDeleteThing is DELETE /api/things/{name}: it removes the thing with its shadow, history
// and credential (registry.DeleteThing), answers 204, and announces the name on the event
// stream so that dashboards drop it. Config.OnDelete is called first (the gateway forgets the
// thing). A write: it always needs the token.
func (a *API) handleDeleteThing(w http.ResponseWriter, r *http.Request) {
	name, ok := thingName(w, r)
	if !ok || !noParams(w, r) {
		return
	}
	if a.cfg.OnDelete != nil {
		a.cfg.OnDelete(name)
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	if err := a.store.DeleteThing(ctx, name); err != nil {
		a.storeError(w, r, "thing "+quote(name), err)
		return
	}
	a.log.Info("thing deleted through the API", "thing", name, "remote", r.RemoteAddr)
	a.Notify(name)
	w.WriteHeader(http.StatusNoContent)
}
