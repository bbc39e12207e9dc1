package httpapi

import (
	"encoding/csv"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/coapgw/coapgw/internal/registry"
)

// handleHistoryCSV answers /api/things/{name}/history.csv: the same query and rows as
// /history, one line per point, oldest first: time (RFC 3339, UTC, to the millisecond),
// property, value, unit. Reads follow the token rules of every read.
func (a *API) handleHistoryCSV(w http.ResponseWriter, r *http.Request) {
	name, _, series, ok := a.historyRequest(w, r)
	if !ok {
		return
	}
	type row struct {
		t          time.Time
		prop, unit string
		v          float64
	}
	var rows []row
	for _, s := range series {
		for _, p := range s.Points {
			rows = append(rows, row{p.T, s.Property, s.Unit, p.V})
		}
	}
	slices.SortStableFunc(rows, func(x, y row) int { return x.t.Compare(y.t) })
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`-history.csv"`) // names are [a-zA-Z0-9:_-]
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"time", "property", "value", "unit"})
	for _, x := range rows {
		_ = cw.Write([]string{x.t.UTC().Format("2006-01-02T15:04:05.000Z07:00"), x.prop,
			strconv.FormatFloat(x.v, 'g', -1, 64), x.unit})
	}
	cw.Flush()
}

// parseHistoryQuery reads the property, since and limit parameters of the history routes.
func parseHistoryQuery(r *http.Request, now time.Time) (registry.HistoryQuery, error) {
	q, err := parseQuery(r.URL.RawQuery, "property", "since", "limit")
	var hq registry.HistoryQuery
	if err == nil {
		hq.Property, err = q.property()
	}
	if err == nil {
		hq.Since, err = q.since(now)
	}
	if err == nil {
		hq.Limit, err = q.limit(defaultHistoryLimit)
	}
	return hq, err
}

// history runs hq for the thing, or answers the error (404 for an unknown thing) and returns
// false.
func (a *API) history(w http.ResponseWriter, r *http.Request, name string, hq registry.HistoryQuery) ([]registry.Series, bool) {
	ctx, cancel := a.ctx(r)
	defer cancel()
	series, err := a.store.History(ctx, name, hq)
	if err == nil && len(series) == 0 {
		// An empty history may mean an unknown thing; the store need not say which.
		_, err = a.store.Thing(ctx, name)
	}
	if err != nil {
		a.storeError(w, r, "thing "+quote(name), err)
		return nil, false
	}
	return series, true
}
