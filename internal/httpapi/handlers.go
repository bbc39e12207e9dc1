package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/coapgw/coapgw/internal/registry"
)

// Defaults when a request gives no limit.
const (
	defaultPageLimit    = 100
	defaultHistoryLimit = 1000
)

// ctx bounds the store calls of one request.
func (a *API) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), a.cfg.QueryTimeout)
}

// thingName returns the {name} path value, or answers 400 and returns false.
func thingName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if !validName(name) {
		writeError(w, http.StatusBadRequest, "thing name must match ^[a-zA-Z0-9:_-]{1,128}$, got "+quote(name))
		return "", false
	}
	return name, true
}

// noParams answers 400 when the request has query parameters on a route that takes none.
func noParams(w http.ResponseWriter, r *http.Request) bool {
	if _, err := parseQuery(r.URL.RawQuery); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return false
	}
	return true
}

type thingTypesBody struct {
	ThingTypes []registry.ThingType `json:"thingTypes"`
}

func (a *API) handleThingTypes(w http.ResponseWriter, r *http.Request) {
	if !noParams(w, r) {
		return
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	types, err := a.store.ThingTypes(ctx)
	if err != nil {
		a.storeError(w, r, "thing types", err)
		return
	}
	if types == nil {
		types = []registry.ThingType{}
	}
	writeJSON(w, http.StatusOK, thingTypesBody{ThingTypes: types})
}

func (a *API) handleThings(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r.URL.RawQuery, "type", "prefix", "limit", "cursor", "sort", "order", "latest")
	var tq registry.ThingQuery
	if err == nil {
		tq.Type, err = q.name("type")
	}
	if err == nil {
		tq.Sort, tq.Order, err = q.sort()
	}
	if err == nil {
		tq.Latest, err = q.latest()
	}
	if err == nil {
		tq.Prefix, err = q.prefix()
	}
	if err == nil {
		tq.Limit, err = q.limit(defaultPageLimit)
	}
	if err == nil {
		tq.Cursor, err = q.cursor()
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	page, err := a.store.Things(ctx, tq)
	if err != nil {
		a.storeError(w, r, "things", err)
		return
	}
	if page.Things == nil {
		page.Things = []registry.Thing{}
	}
	writeJSON(w, http.StatusOK, page)
}

func (a *API) handleThing(w http.ResponseWriter, r *http.Request) {
	name, ok := thingName(w, r)
	if !ok || !noParams(w, r) {
		return
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	t, err := a.store.Thing(ctx, name)
	if err != nil {
		a.storeError(w, r, "thing "+quote(name), err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (a *API) handleShadow(w http.ResponseWriter, r *http.Request) {
	name, ok := thingName(w, r)
	if !ok || !noParams(w, r) {
		return
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	doc, err := a.store.Shadow(ctx, name)
	if err != nil {
		a.storeError(w, r, "shadow of thing "+quote(name), err)
		return
	}
	if !json.Valid(doc) {
		a.log.Error("http api: store returned a shadow that is not JSON", "thing", name, "bytes", len(doc))
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	writeRawJSON(w, http.StatusOK, doc)
}

type historyBody struct {
	Thing  string            `json:"thingName"`
	Since  *time.Time        `json:"since,omitempty"`
	Series []registry.Series `json:"series"`
}

// historyRequest reads the thing's name and the history query of r and fetches the series, or
// answers the error (400 for a bad query, what a.history answers otherwise) and says !ok.
// /history and /history.csv share it.
func (a *API) historyRequest(w http.ResponseWriter, r *http.Request) (string, registry.HistoryQuery, []registry.Series, bool) {
	name, ok := thingName(w, r)
	if !ok {
		return "", registry.HistoryQuery{}, nil, false
	}
	hq, err := parseHistoryQuery(r, a.cfg.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", registry.HistoryQuery{}, nil, false
	}
	series, ok := a.history(w, r, name, hq)
	return name, hq, series, ok
}

func (a *API) handleHistory(w http.ResponseWriter, r *http.Request) {
	name, hq, series, ok := a.historyRequest(w, r)
	if !ok {
		return
	}
	if series == nil {
		series = []registry.Series{}
	}
	for i := range series {
		if series[i].Points == nil {
			series[i].Points = []registry.Point{}
		}
	}
	body := historyBody{Thing: name, Series: series}
	if !hq.Since.IsZero() {
		body.Since = &hq.Since
	}
	writeJSON(w, http.StatusOK, body)
}

func (a *API) handleErrors(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r.URL.RawQuery, "limit", "cursor")
	var limit int
	var cursor string
	if err == nil {
		limit, err = q.limit(defaultPageLimit)
	}
	if err == nil {
		cursor, err = q.cursor()
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	page, err := a.store.SetAsides(ctx, limit, cursor)
	if err != nil {
		a.storeError(w, r, "set-aside records", err)
		return
	}
	if page.Records == nil {
		page.Records = []registry.SetAside{}
	}
	writeJSON(w, http.StatusOK, page)
}

// statusBody is the /api/status document: the gateway's Status, the registry's counts, uptime and
// the server's clock (so the dashboard can show "3 s ago" right on a machine whose clock is off).
type statusBody struct {
	Status
	registry.Counts
	UptimeSeconds float64   `json:"uptimeSeconds"`
	Time          time.Time `json:"time"`
}

func (a *API) handleStatus(w http.ResponseWriter, r *http.Request) {
	if !noParams(w, r) {
		return
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	counts, err := a.store.Counts(ctx)
	if err != nil {
		a.storeError(w, r, "counts", err)
		return
	}
	now := a.cfg.Now()
	body := statusBody{Status: a.status(), Counts: counts, Time: now.UTC()}
	if !body.StartedAt.IsZero() {
		body.UptimeSeconds = now.Sub(body.StartedAt).Seconds()
		body.StartedAt = body.StartedAt.UTC()
	}
	writeJSON(w, http.StatusOK, body)
}
