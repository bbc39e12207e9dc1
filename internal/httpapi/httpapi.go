// Package httpapi serves the gateway's JSON API and its dashboard page on the operations HTTP
// server, beside /metrics, /healthz and /readyz.
//
// Routes (GET; HEAD works too; errors are JSON {"error": "..."}):
//
//	/api/thing-types                                  {"thingTypes": [...]}
//	/api/things?type=&prefix=&limit=&cursor=&sort=&order=&latest=
//	                                                  {"things": [...], "nextToken": "...", "total": N}:
//	                                                  sort is lastSeen (default), firstSeen, messages,
//	                                                  name or type; order asc or desc (default: asc
//	                                                  for name and type, desc otherwise); latest=N
//	                                                  (0–20) adds each thing's N newest reported
//	                                                  values, "latest": [{"property", "value",
//	                                                  "unit", "t"}]; a cursor is of one sort and order
//	/api/things/{name}                                one thing
//	/api/things/{name}/shadow                         the AWS GetThingShadow document
//	/api/things/{name}/history?property=&since=&limit= {"thingName": ..., "series": [...]}
//	/api/things/{name}/history.csv?property=&since=&limit= the same as CSV: time,property,value,unit
//	                                                  (csv.go), oldest first
//	/api/errors?limit=&cursor=                        set-aside records, newest first
//	/api/errors/reasons                               {"reasons": [{"reason", "count", "lastAt"}]}: the
//	                                                  set-aside records counted by reason (setaside.go)
//	DELETE /api/errors?reason=                        {"dismissed": n}: the records with that reason
//	                                                  deleted (a write: needs the token)
//	POST /api/errors/retry?reason= | ?gw=&seq=        {"applied", "setAside", "skipped"}: the records
//	                                                  with that reason, or the one record, applied
//	                                                  again (registry.RetrySetAsides; a write)
//	/api/status                                       gateway and registry status for the dashboard
//	/api/events                                       Server-Sent Events: "thing" and "resync"
//	DELETE /api/things/{name}                         204: the thing, its shadow, history and
//	                                                  credential removed (a write, see below)
//	PUT /api/things/{name}/shadow {"state":{"desired":{...}}}  set desired state (desired.go; a
//	                                                  write: needs the token); the shadow afterwards
//	POST /api/login {"token": "..."}                  204 and a session cookie (see below)
//	POST /api/logout                                  204, the session cookie removed
//	/api/openapi.json                                 this API as an OpenAPI 3 document (openapi.go;
//	                                                  public, no token)
//	/                                                 the dashboard (embedded static files)
//
// Access. Config.Token is the API token ("" when none is configured); Config.Public says the
// server listens on an address other than loopback ([IsLoopback] of the bound address is false).
//   - Writes (DELETE /api/things/{name}, PUT of a shadow's desired state, DELETE /api/errors,
//     POST /api/errors/retry) always need the token, on loopback too.
//   - Reads need the token when the server is public, and are open on loopback.
//   - On loopback the Host header must be localhost, a loopback IP or one of
//     Config.AllowedHosts, with any port; anything else gets 403, which defeats DNS rebinding (a
//     page of another site whose name resolves to 127.0.0.1 sends its own name). Off loopback the
//     token is the check.
//   - The token is "Authorization: Bearer <token>", compared in constant time; a missing or wrong
//     one gets 401 with WWW-Authenticate: Bearer. A browser instead posts the token once to
//     /api/login and gets the cookie coapgw_session (HttpOnly, SameSite=Strict, a browser-session
//     cookie): an HMAC of its expiry (Config.SessionTTL, default 24h) keyed with the token, so it is
//     not the token, needs no server state and ends when the token changes. The cookie is how the
//     event stream authenticates (EventSource cannot set headers); it counts only on requests
//     without a foreign Origin. The dashboard shows a login form on the first 401.
//   - The dashboard's static files are open: they hold no data.
//
// [RequireToken] puts the bearer token in front of any handler (for /metrics), and
// [LoadOrCreateToken] loads the token file or generates it.
//
// Names (thing, thing type, prefix) must match the AWS pattern ^[a-zA-Z0-9:_-]{1,128}$, limit is
// 1–1000, since is an RFC 3339 time or a Go duration such as 15m (meaning now−15m). Unknown query
// parameters and repeated parameters are rejected with 400.
//
// The event stream sends "event: thing" with data {"names": [...]} at most once per
// Config.Coalesce with the things announced through [API.Notify] since the last event; a client
// whose pending names exceed Config.ClientBuffer (because it reads slowly, or because one batch is
// that large) gets one "event: resync" instead, meaning "reload what you show". Comment lines keep
// idle connections open. [API.Close] ends every stream; mount it with
// http.Server.RegisterOnShutdown so that Shutdown does not wait for the streams.
//
// The package has no metrics and no config keys of its own; Config holds the tunables with
// defaults. The gateway fills the access fields from its HTTP settings: Token from the token file
// (--http-token-file, or a token LoadOrCreateToken generates in the data directory when the
// address is not loopback), Public from IsLoopback of the bound address, AllowedHosts from
// --http-allowed-hosts; and it wraps /metrics in RequireToken when --metrics-auth is set.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/coapgw/coapgw/internal/registry"
)

// Store is the registry's API that the HTTP API calls (implemented by *registry.Registry).
// Thing, Shadow and DeleteThing return registry.ErrNotFound for an unknown thing; History may.
type Store interface {
	ThingTypes(ctx context.Context) ([]registry.ThingType, error)
	Things(ctx context.Context, q registry.ThingQuery) (registry.ThingPage, error)
	Thing(ctx context.Context, name string) (registry.Thing, error)
	Shadow(ctx context.Context, name string) ([]byte, error)
	History(ctx context.Context, name string, q registry.HistoryQuery) ([]registry.Series, error)
	SetAsides(ctx context.Context, limit int, cursor string) (registry.SetAsidePage, error)
	Counts(ctx context.Context) (registry.Counts, error)
	DeleteThing(ctx context.Context, name string) error
}

// Status is what the gateway knows about itself for the dashboard's status panel. The registry's
// counts (things, thing types, messages, set-aside records) are added by the API from
// Store.Counts, so the gateway does not fill them.
type Status struct {
	Version   string    `json:"version"`
	StartedAt time.Time `json:"startedAt"` // uptime is computed from it
	Ready     bool      `json:"ready"`

	// AcceptedPerSecond is the recent rate of records acknowledged to devices (2.04), records/s.
	AcceptedPerSecond float64 `json:"acceptedPerSecond"`
	// SpoolDepth is the number of records in the spool not yet taken by the processor.
	SpoolDepth int64 `json:"spoolDepth"`
	// SpoolBytes is the spool's size on disk.
	SpoolBytes int64 `json:"spoolBytes"`
	// ProcessorLagSeconds is how old the oldest record not yet applied is, 0 when caught up.
	ProcessorLagSeconds float64 `json:"processorLagSeconds"`
}

// StatusFunc reports the gateway's status; it is called once per /api/status request and must be
// safe for concurrent use.
type StatusFunc func() Status

// Config holds the API's tunables; the zero value is usable.
type Config struct {
	// Coalesce is the minimum time between two "thing" events on the event stream (default 250ms).
	Coalesce time.Duration
	// KeepAlive is the interval of comment lines on an idle event stream (default 15s).
	KeepAlive time.Duration
	// ClientBuffer is the most thing names kept for one event-stream client between two writes;
	// past it the client gets a "resync" event instead (default 1000).
	ClientBuffer int
	// MaxClients is the most event streams open at once; more get 503 and the dashboard falls
	// back to polling (default 256).
	MaxClients int
	// WriteTimeout bounds one write to an event-stream client; a client that does not read for
	// that long is disconnected (default 30s).
	WriteTimeout time.Duration
	// QueryTimeout bounds each store call of a request (default 10s).
	QueryTimeout time.Duration
	// Now is the clock (default time.Now); tests set it to resolve "since=15m".
	Now func() time.Time

	// Token is the API token; "" when none is configured (then writes are refused, and so is
	// everything under /api/ when Public).
	Token string
	// Public is set when the server listens on an address other than loopback (0.0.0.0, a LAN
	// address): reads then need the token, and the Host header is not checked.
	Public bool
	// AllowedHosts are host names, besides localhost and the loopback IPs, that a loopback server
	// answers to (a name in /etc/hosts, a reverse proxy's name); ports are ignored.
	AllowedHosts []string
	// SessionTTL is how long a dashboard login lasts at most (default 24h); the cookie also ends
	// with the browser session.
	SessionTTL time.Duration

	// OnDelete, if set, is called with a thing's name before DELETE /api/things/{name} deletes it
	// from the store, so that the gateway forgets it (the device API's --max-things count and
	// the thing's type: ingest.Handler.ForgetThing).
	OnDelete func(name string)
	// OnRetried, if set, is called with the things that had a set-aside record applied by
	// POST /api/errors/retry, so that the gateway learns them (ingest.Handler.ThingChanged).
	OnRetried func(things []registry.NamedThing)
}

func (c *Config) setDefaults() {
	if c.Coalesce <= 0 {
		c.Coalesce = 250 * time.Millisecond
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = 15 * time.Second
	}
	if c.ClientBuffer <= 0 {
		c.ClientBuffer = 1000
	}
	if c.MaxClients <= 0 {
		c.MaxClients = 256
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.QueryTimeout <= 0 {
		c.QueryTimeout = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = 24 * time.Hour
	}
}

// API is the HTTP JSON API, its event stream and the dashboard.
type API struct {
	cfg    Config
	store  Store
	status StatusFunc
	log    *slog.Logger
	static *staticFiles
	hub    *hub
	access *access
}

// New returns the API over store. status may be nil (the gateway fields then stay zero) and log
// may be nil (nothing is logged). It starts nothing; call Close when the server shuts down.
func New(cfg Config, store Store, status StatusFunc, log *slog.Logger) *API {
	cfg.setDefaults()
	if store == nil {
		panic("httpapi: nil Store")
	}
	if status == nil {
		status = func() Status { return Status{} }
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Public && cfg.Token == "" {
		log.Warn("http api listens beyond loopback without a token: every /api request is refused")
	}
	return &API{
		cfg:    cfg,
		store:  store,
		status: status,
		log:    log,
		static: mustStatic(),
		hub:    newHub(cfg.Coalesce, cfg.ClientBuffer, cfg.MaxClients),
		access: newAccess(cfg),
	}
}

// Register mounts the API under /api/ and the dashboard at / (and /static/) on mux.
//
// Every /api/ route goes through the access check (see the package doc): api for reads, write
// for routes that change something (which always need the token). The order, outermost first:
// recoverer, access, method check, handler.
func (a *API) Register(mux *http.ServeMux) {
	api := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, a.recoverer(a.access.guard(false, getOnly(h))))
	}
	mux.Handle("/api/login", a.recoverer(http.HandlerFunc(a.access.handleLogin)))
	mux.Handle("/api/logout", a.recoverer(http.HandlerFunc(a.access.handleLogout)))
	api("/api/thing-types", a.handleThingTypes)
	api("/api/things", a.handleThings)
	mux.Handle("/api/things/{name}", a.recoverer(a.access.guard(false, getOnlyAllow("GET, HEAD, DELETE", a.handleThing))))
	mux.Handle("DELETE /api/things/{name}", a.write(http.HandlerFunc(a.handleDeleteThing)))
	api("/api/things/{name}/shadow", a.handleShadow)
	api("/api/things/{name}/history", a.handleHistory)
	api("/api/things/{name}/history.csv", a.handleHistoryCSV)
	api("/api/errors", a.handleErrors)
	api("/api/status", a.handleStatus)
	api("/api/events", a.handleEvents)
	mux.Handle("GET /api/openapi.json", a.recoverer(http.HandlerFunc(serveOpenAPI))) // openapi.go
	if ss, ok := a.store.(SetAsideStore); ok {
		api("/api/errors/reasons", a.handleReasons(ss))
		mux.Handle("DELETE /api/errors", a.write(a.handleDismiss(ss)))
	}
	if rs, ok := a.store.(RetryStore); ok {
		mux.Handle("POST /api/errors/retry", a.write(a.handleRetry(rs)))
		mux.Handle("/api/errors/retry", a.recoverer(a.access.guard(false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", "POST")
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed")
		}))))
	}
	if ds, ok := a.store.(DesiredStore); ok {
		mux.Handle("PUT /api/things/{name}/shadow", a.write(a.handlePutShadow(ds)))
	}
	mux.Handle("/api/", a.recoverer(a.access.guard(false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such route: "+quote(r.URL.Path))
	}))))
	mux.Handle("GET /{$}", http.HandlerFunc(a.static.serveIndex))
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.HandlerFunc(a.static.serveFile)))
}

// Handler returns a handler that serves only this API (a mux with Register applied); handy for
// tests and for a server that has nothing else.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	a.Register(mux)
	return mux
}

// Notify announces that the named things changed (were created or updated). It never blocks on
// clients: the names are merged into a pending set and sent within Config.Coalesce. Safe for
// concurrent use; a no-op after Close.
func (a *API) Notify(thingNames ...string) { a.hub.notify(thingNames) }

// Close ends every event stream and refuses new ones with 503. The other routes keep working.
// Close is idempotent and does not wait for the handlers; http.Server.Shutdown does.
func (a *API) Close() { a.hub.close() }

// write wraps a route that changes something: it always needs the token, whether the server is
// public or not. Later write routes are mounted as mux.Handle("POST /api/...", a.write(h)).
func (a *API) write(h http.Handler) http.Handler {
	return a.recoverer(a.access.guard(true, h))
}

// getOnly answers 405 with an Allow header for methods other than GET and HEAD.
func getOnly(h http.HandlerFunc) http.Handler { return getOnlyAllow("GET, HEAD", h) }

// getOnlyAllow is getOnly for a path that has other methods on routes of their own: its 405
// names them in allow.
func getOnlyAllow(allow string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed")
			return
		}
		h(w, r)
	})
}

// recoverer turns a panic in a handler into a 500 without internals and logs it.
func (a *API) recoverer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				a.log.Error("http api panic", "path", r.URL.Path, "panic", v)
				writeError(w, http.StatusInternalServerError, "internal error")
			}
		}()
		h.ServeHTTP(w, r)
	})
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	writeRawJSON(w, code, b)
}

func writeRawJSON(w http.ResponseWriter, code int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(b)
	_, _ = w.Write([]byte{'\n'})
}

// storeError answers for an error of the store: 404 for registry.ErrNotFound, 400 for
// registry.ErrInvalidCursor and registry.ErrInvalidQuery, nothing for a client that went away, 503 for a store that did not
// answer in time, and 500 without the message otherwise (the message goes to the log).
func (a *API) storeError(w http.ResponseWriter, r *http.Request, what string, err error) {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		writeError(w, http.StatusNotFound, what+" not found")
	case errors.Is(err, registry.ErrInvalidCursor):
		writeError(w, http.StatusBadRequest, "cursor is not a token this API returned for this query; start again without it")
	case errors.Is(err, registry.ErrInvalidQuery):
		writeError(w, http.StatusBadRequest, err.Error())
	case r.Context().Err() != nil:
		// The client is gone; nobody reads the answer.
	case errors.Is(err, context.DeadlineExceeded):
		a.log.Warn("http api store timeout", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusServiceUnavailable, "the registry did not answer in time")
	default:
		a.log.Error("http api store", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}
