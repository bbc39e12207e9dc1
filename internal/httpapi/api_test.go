package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/registry"
	"go.uber.org/goleak"
)

// The registry implements the Store this package declares.
var _ Store = (*registry.Registry)(nil)
var _ SetAsideStore = (*registry.Registry)(nil)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fixture is an API over a fake store with a fixed clock, on a mux that also carries the
// gateway's own routes (so a pattern conflict with them would panic here).
type fixture struct {
	store  *fakeStore
	status StatusFunc // replaceable before the first request
	api    *API
	mux    *http.ServeMux
	logs   *bytes.Buffer
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := &fixture{store: newFakeStore(), logs: &bytes.Buffer{}}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return t0.Add(time.Hour) }
	}
	f.status = func() Status {
		return Status{Version: "v1.2.3", StartedAt: t0, Ready: true, AcceptedPerSecond: 1234.5,
			SpoolDepth: 7, SpoolBytes: 4096, ProcessorLagSeconds: 0.25}
	}
	status := func() Status { return f.status() }
	f.api = New(cfg, f.store, status, slog.New(slog.NewTextHandler(f.logs, nil)))
	t.Cleanup(f.api.Close)
	f.mux = http.NewServeMux()
	f.mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "metrics") })
	f.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	f.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ready") })
	f.mux.HandleFunc("/debug/pprof/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "pprof") })
	f.api.Register(f.mux)
	return f
}

// seed adds three things of two types with nested and non-numeric properties, and a set-aside
// record.
func (f *fixture) seed() {
	f.store.report("sensor-1", "thermo", t0, map[string]any{"temp": 20.5, "env": map[string]any{"hum": 40}})
	f.store.report("sensor-1", "thermo", t0.Add(time.Minute), map[string]any{"temp": 21.0, "mode": "eco"})
	f.store.report("sensor-2", "thermo", t0.Add(2*time.Minute), map[string]any{"temp": 19})
	f.store.report("door:7", "door", t0.Add(30*time.Second), map[string]any{"open": true})
	f.store.setAside(registry.SetAside{GW: "gw1", Seq: 41, ReceivedAt: t0, Type: "thermo", Thing: "sensor-9",
		Reason: "payload is not a JSON object", PayloadB64: []byte{0xff, 0x00}, At: t0.Add(time.Second)})
	f.store.setAside(registry.SetAside{GW: "gw1", Seq: 42, ReceivedAt: t0, Type: "thermo", Thing: "sensor-9",
		Reason: "shadow too large", Payload: json.RawMessage(`{"big":1}`), At: t0.Add(2 * time.Second)})
}

type response struct {
	code   int
	header http.Header
	body   []byte
}

func (f *fixture) do(t *testing.T, method, target string) response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	req.Host = "localhost:8080" // the server listens on loopback (Config.Public is false)
	rec := httptest.NewRecorder()
	f.mux.ServeHTTP(rec, req)
	return response{rec.Code, rec.Header(), rec.Body.Bytes()}
}

func (f *fixture) get(t *testing.T, target string) response { return f.do(t, http.MethodGet, target) }

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json", ct)
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r response) errorMessage(t *testing.T) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	r.decode(t, &e)
	if e.Error == "" {
		t.Fatalf("error body without message: %s", r.body)
	}
	return e.Error
}

func TestThingTypes(t *testing.T) {
	f := newFixture(t, Config{})
	r := f.get(t, "/api/thing-types")
	if r.code != 200 || strings.TrimSpace(string(r.body)) != `{"thingTypes":[]}` {
		t.Fatalf("empty registry: %d %s", r.code, r.body)
	}
	f.seed()
	r = f.get(t, "/api/thing-types")
	var body struct {
		ThingTypes []registry.ThingType `json:"thingTypes"`
	}
	r.decode(t, &body)
	if len(body.ThingTypes) != 2 || body.ThingTypes[0].Name != "door" || body.ThingTypes[1].Things != 2 {
		t.Fatalf("thing types = %+v", body.ThingTypes)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", r.header.Get("Cache-Control"))
	}
}

func TestThingsList(t *testing.T) {
	f := newFixture(t, Config{})
	r := f.get(t, "/api/things")
	if r.code != 200 || !strings.Contains(string(r.body), `"things":[]`) {
		t.Fatalf("empty registry: %d %s", r.code, r.body)
	}
	f.seed()

	var page registry.ThingPage
	f.get(t, "/api/things").decode(t, &page)
	if f.store.lastThing.Limit != 100 {
		t.Errorf("default limit passed to the store = %d, want 100", f.store.lastThing.Limit)
	}
	names := func(p registry.ThingPage) (out []string) {
		for _, th := range p.Things {
			out = append(out, th.Name)
		}
		return out
	}
	if got := fmt.Sprint(names(page)); got != "[sensor-2 sensor-1 door:7]" || page.Total != 3 || page.Next != "" {
		t.Fatalf("page = %v total %d next %q", got, page.Total, page.Next)
	}
	if th := page.Things[1]; th.Messages != 2 || th.Version != 2 || th.Type != "thermo" || !th.FirstSeen.Equal(t0) {
		t.Errorf("sensor-1 = %+v", th)
	}

	// Filters and paging go to the store as given.
	page = registry.ThingPage{}
	f.get(t, "/api/things?type=thermo&prefix=sensor&limit=1").decode(t, &page)
	if q := f.store.lastThing; q.Type != "thermo" || q.Prefix != "sensor" || q.Limit != 1 || q.Cursor != "" {
		t.Errorf("query = %+v", q)
	}
	if fmt.Sprint(names(page)) != "[sensor-2]" || page.Next == "" || page.Total != 2 {
		t.Fatalf("first page = %+v", page)
	}
	next := page.Next
	page = registry.ThingPage{}
	f.get(t, "/api/things?type=thermo&prefix=sensor&limit=1&cursor="+next).decode(t, &page)
	if fmt.Sprint(names(page)) != "[sensor-1]" || page.Next != "" {
		t.Fatalf("second page = %+v", page)
	}
}

func TestThing(t *testing.T) {
	f := newFixture(t, Config{})
	f.seed()
	var th registry.Thing
	f.get(t, "/api/things/door:7").decode(t, &th)
	if th.Name != "door:7" || th.Type != "door" || th.Messages != 1 || !th.LastSeen.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("thing = %+v", th)
	}

	r := f.get(t, "/api/things/nope")
	if r.code != 404 || r.errorMessage(t) != `thing "nope" not found` {
		t.Fatalf("unknown thing: %d %s", r.code, r.body)
	}
}

func TestShadow(t *testing.T) {
	f := newFixture(t, Config{})
	f.seed()
	r := f.get(t, "/api/things/sensor-1/shadow")
	want, _ := f.store.Shadow(t.Context(), "sensor-1")
	if r.code != 200 || !bytes.Equal(bytes.TrimSpace(r.body), want) {
		t.Fatalf("shadow: %d %s, want the store's bytes %s", r.code, r.body, want)
	}
	var doc struct {
		State struct {
			Reported map[string]any `json:"reported"`
		} `json:"state"`
		Metadata struct {
			Reported map[string]any `json:"reported"`
		} `json:"metadata"`
		Version   int64 `json:"version"`
		Timestamp int64 `json:"timestamp"`
	}
	r.decode(t, &doc)
	if doc.State.Reported["temp"] != 21.0 || doc.Version != 2 || doc.Metadata.Reported["temp"] == nil {
		t.Fatalf("shadow document = %+v", doc)
	}

	if r := f.get(t, "/api/things/ghost/shadow"); r.code != 404 || !strings.Contains(r.errorMessage(t), "ghost") {
		t.Fatalf("unknown thing: %d %s", r.code, r.body)
	}
}

func TestHistory(t *testing.T) {
	f := newFixture(t, Config{}) // now = t0+1h
	f.seed()
	type body struct {
		Thing  string            `json:"thingName"`
		Since  *time.Time        `json:"since"`
		Series []registry.Series `json:"series"`
	}
	var b body
	f.get(t, "/api/things/sensor-1/history").decode(t, &b)
	if b.Thing != "sensor-1" || b.Since != nil || len(b.Series) != 2 {
		t.Fatalf("history = %+v", b)
	}
	if s := b.Series[1]; s.Property != "temp" || len(s.Points) != 2 || s.Points[1].V != 21 || !s.Points[0].T.Equal(t0) {
		t.Fatalf("temp series = %+v", s)
	}
	if b.Series[0].Property != "env.hum" {
		t.Errorf("nested property = %q, want env.hum", b.Series[0].Property)
	}
	if q := f.store.lastHist; q.Limit != 1000 || q.Property != "" || !q.Since.IsZero() {
		t.Errorf("default query = %+v", q)
	}

	// since as a duration is relative to the clock; as RFC 3339 it is taken as is.
	b = body{}
	f.get(t, "/api/things/sensor-1/history?property=temp&since=59m30s&limit=5").decode(t, &b)
	if q := f.store.lastHist; q.Property != "temp" || q.Limit != 5 || !q.Since.Equal(t0.Add(30*time.Second)) {
		t.Errorf("query = %+v", q)
	}
	if len(b.Series) != 1 || len(b.Series[0].Points) != 1 || b.Since == nil || !b.Since.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("filtered history = %+v", b)
	}
	for _, since := range []string{"2026-03-01T12:00:30Z", "2026-03-01T13:00:30%2B01:00", "2026-03-01T13:00:30+01:00"} {
		f.get(t, "/api/things/sensor-1/history?since="+since)
		if q := f.store.lastHist; !q.Since.Equal(t0.Add(30 * time.Second)) {
			t.Errorf("since=%s: store got %v", since, q.Since)
		}
	}

	// A thing without numeric properties has an empty list, not null; an unknown one is 404.
	r := f.get(t, "/api/things/door:7/history")
	if r.code != 200 || !strings.Contains(string(r.body), `"series":[]`) {
		t.Fatalf("no numeric history: %d %s", r.code, r.body)
	}
	if r := f.get(t, "/api/things/ghost/history"); r.code != 404 {
		t.Fatalf("unknown thing history: %d %s", r.code, r.body)
	}
}

func TestSetAsideRecords(t *testing.T) {
	f := newFixture(t, Config{})
	r := f.get(t, "/api/errors")
	if r.code != 200 || !strings.Contains(string(r.body), `"records":[]`) {
		t.Fatalf("none: %d %s", r.code, r.body)
	}
	f.seed()
	var page registry.SetAsidePage
	f.get(t, "/api/errors?limit=1").decode(t, &page)
	if len(page.Records) != 1 || page.Records[0].Seq != 42 || page.Total != 2 || page.Next == "" {
		t.Fatalf("first page = %+v", page)
	}
	if string(page.Records[0].Payload) != `{"big":1}` {
		t.Errorf("payload = %s", page.Records[0].Payload)
	}
	next := page.Next
	page = registry.SetAsidePage{}
	f.get(t, "/api/errors?limit=1&cursor="+next).decode(t, &page)
	if len(page.Records) != 1 || page.Records[0].Seq != 41 || page.Next != "" {
		t.Fatalf("second page = %+v", page)
	}
	if !bytes.Equal(page.Records[0].PayloadB64, []byte{0xff, 0}) || page.Records[0].Reason != "payload is not a JSON object" {
		t.Errorf("record = %+v", page.Records[0])
	}
}

func TestStatus(t *testing.T) {
	f := newFixture(t, Config{})
	f.seed()
	var st struct {
		Version             string    `json:"version"`
		StartedAt           time.Time `json:"startedAt"`
		Ready               bool      `json:"ready"`
		AcceptedPerSecond   float64   `json:"acceptedPerSecond"`
		SpoolDepth          int64     `json:"spoolDepth"`
		SpoolBytes          int64     `json:"spoolBytes"`
		ProcessorLagSeconds float64   `json:"processorLagSeconds"`
		ThingTypes          int64     `json:"thingTypes"`
		Things              int64     `json:"things"`
		Messages            int64     `json:"messages"`
		SetAside            int64     `json:"setAside"`
		SetAsideDropped     int64     `json:"setAsideDropped"`
		UptimeSeconds       float64   `json:"uptimeSeconds"`
		Time                time.Time `json:"time"`
	}
	f.get(t, "/api/status").decode(t, &st)
	if st.Version != "v1.2.3" || !st.Ready || st.AcceptedPerSecond != 1234.5 || st.SpoolDepth != 7 ||
		st.SpoolBytes != 4096 || st.ProcessorLagSeconds != 0.25 {
		t.Errorf("gateway fields = %+v", st)
	}
	if st.Things != 3 || st.ThingTypes != 2 || st.Messages != 4 || st.SetAside != 2 || st.SetAsideDropped != 0 {
		t.Errorf("registry counts = %+v", st)
	}
	if st.UptimeSeconds != 3600 || !st.Time.Equal(t0.Add(time.Hour)) || !st.StartedAt.Equal(t0) {
		t.Errorf("uptime %v time %v started %v", st.UptimeSeconds, st.Time, st.StartedAt)
	}

	// Without a StatusFunc the gateway fields are zero and the counts still come.
	api := New(Config{}, f.store, nil, nil)
	defer api.Close()
	rec := httptest.NewRecorder()
	api.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/api/status", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"things":3`) || !strings.Contains(rec.Body.String(), `"uptimeSeconds":0`) {
		t.Fatalf("nil status: %d %s", rec.Code, rec.Body)
	}
}

func TestParameterErrors(t *testing.T) {
	f := newFixture(t, Config{})
	f.seed()
	long := strings.Repeat("a", 129)
	tests := []struct {
		target string
		want   string // part of the error message
	}{
		{"/api/things?limit=0", "limit must be an integer from 1 to 1000"},
		{"/api/things?limit=1001", "limit must be an integer from 1 to 1000"},
		{"/api/things?limit=-5", "limit must be"},
		{"/api/things?limit=ten", `got "ten"`},
		{"/api/things?limit=", "empty value"},
		{"/api/things?limit=1&limit=2", `parameter limit given 2 times`},
		{"/api/things?type=a%20b", "type must match ^[a-zA-Z0-9:_-]{1,128}$"},
		{"/api/things?type=" + long, "type must match"},
		{"/api/things?prefix=a/b", "prefix must match"},
		{"/api/things?prefix=" + long, "prefix must match"},
		{"/api/things?cursor=" + strings.Repeat("x", 1025), "cursor is longer than 1024"},
		{"/api/things?cursor=a%0Ab", "cursor"},
		{"/api/things?orderBy=name", `unknown parameter "orderBy" (allowed: type, prefix, limit, cursor, sort, order, latest)`},
		{"/api/things?sort=size", `sort must be one of lastSeen, firstSeen, messages, name, type, got "size"`},
		{"/api/things?sort=", `sort must be one of`},
		{"/api/things?sort=name&sort=type", `parameter sort given 2 times`},
		{"/api/things?order=up", `order must be asc or desc, got "up"`},
		{"/api/things?latest=21", `latest must be an integer from 0 to 20, got "21"`},
		{"/api/things?latest=-1", `latest must be`},
		{"/api/things?limit=%zz", "malformed query string"},
		{"/api/thing-types?x=1", `unknown parameter "x": this route takes none`},
		{"/api/things/sensor-1?verbose=1", `unknown parameter "verbose"`},
		{"/api/things/sensor-1/shadow?version=1", `unknown parameter "version"`},
		{"/api/status?x=1", "unknown parameter"},
		{"/api/events?x=1", "unknown parameter"},
		{"/api/things/a%20b", "thing name must match"},
		{"/api/things/" + long, "thing name must match"},
		{"/api/things/a%2Fb/shadow", "thing name must match"},
		{"/api/things/sensor%C3%A9/history", "thing name must match"},
		{"/api/things/sensor-1/history?since=yesterday", "since must be an RFC 3339 time"},
		{"/api/things/sensor-1/history?since=-5m", "since duration must be positive"},
		{"/api/things/sensor-1/history?since=0s", "since duration must be positive"},
		{"/api/things/sensor-1/history?since=2026-13-01T00:00:00Z", "since must be"},
		{"/api/things/sensor-1/history?limit=5000", "limit must be"},
		{"/api/things/sensor-1/history?property=" + strings.Repeat("p", 257), "property must be"},
		{"/api/things/sensor-1/history?property=a%01b", "control character"},
		{"/api/things/sensor-1/history?property=%FF", "valid UTF-8"},
		{"/api/things/sensor-1/history?from=1", `unknown parameter "from" (allowed: property, since, limit)`},
		{"/api/errors?limit=0", "limit must be"},
		{"/api/things?cursor=stale", "cursor is not a token this API returned"},
		{"/api/errors?cursor=stale", "cursor is not a token this API returned"},
		{"/api/errors?type=x", `unknown parameter "type"`},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			r := f.get(t, tt.target)
			if r.code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", r.code, r.body)
			}
			if msg := r.errorMessage(t); !strings.Contains(msg, tt.want) {
				t.Fatalf("error %q, want it to contain %q", msg, tt.want)
			}
		})
	}
	if len(f.store.things) != 3 {
		t.Fatal("a bad request changed the store")
	}
}

func TestLongValuesAreNotEchoedWhole(t *testing.T) {
	f := newFixture(t, Config{})
	r := f.get(t, "/api/things?type="+strings.Repeat("é", 500))
	if msg := r.errorMessage(t); len(msg) > 200 || !strings.HasSuffix(msg, "…") {
		t.Fatalf("message of %d bytes: %q", len(msg), msg)
	}
}

func TestRoutesAndMethods(t *testing.T) {
	f := newFixture(t, Config{})
	f.seed()
	for _, target := range []string{"/api/nope", "/api/", "/api/things/sensor-1/nope", "/api/things/", "/api/things/sensor-1/shadow/x"} {
		r := f.get(t, target)
		if r.code != 404 || !strings.Contains(r.errorMessage(t), "no such route") {
			t.Errorf("GET %s: %d %s", target, r.code, r.body)
		}
	}
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		for _, target := range []string{"/api/things", "/api/things/sensor-1", "/api/things/sensor-1/shadow", "/api/events", "/api/status"} {
			allow := "GET, HEAD"
			if target == "/api/things/sensor-1" { // DELETE is a write route (TestDeleteThing)
				if m == "DELETE" {
					continue
				}
				allow = "GET, HEAD, DELETE"
			}
			r := f.do(t, m, target)
			if r.code != 405 || r.header.Get("Allow") != allow || !strings.Contains(r.errorMessage(t), "not allowed") {
				t.Errorf("%s %s: %d allow=%q %s", m, target, r.code, r.header.Get("Allow"), r.body)
			}
		}
	}
	if r := f.do(t, "HEAD", "/api/things/sensor-1"); r.code != 200 {
		t.Errorf("HEAD: %d", r.code)
	}
	// The gateway's own routes on the same mux still answer.
	for target, want := range map[string]string{"/metrics": "metrics", "/healthz": "ok", "/readyz": "ready", "/debug/pprof/": "pprof"} {
		if r := f.get(t, target); r.code != 200 || string(r.body) != want {
			t.Errorf("GET %s: %d %s", target, r.code, r.body)
		}
	}
}

func TestStoreFailuresDoNotLeak(t *testing.T) {
	f := newFixture(t, Config{})
	f.seed()
	f.store.fail(errors.New("sqlite: database disk image is malformed at /var/lib/secret.db"))
	for _, target := range []string{
		"/api/thing-types", "/api/things", "/api/things/sensor-1", "/api/things/sensor-1/shadow",
		"/api/things/sensor-1/history", "/api/errors", "/api/status",
	} {
		r := f.get(t, target)
		if r.code != 500 || r.errorMessage(t) != "internal error" || bytes.Contains(r.body, []byte("sqlite")) {
			t.Errorf("GET %s: %d %s", target, r.code, r.body)
		}
	}
	if !strings.Contains(f.logs.String(), "disk image is malformed") {
		t.Errorf("the cause was not logged: %s", f.logs)
	}

	// A deadline is 503, a wrapped ErrNotFound still 404.
	f.store.fail(fmt.Errorf("query: %w", errDeadline{}))
	if r := f.get(t, "/api/things"); r.code != 503 {
		t.Errorf("deadline: %d %s", r.code, r.body)
	}
	f.store.fail(fmt.Errorf("lookup: %w", registry.ErrNotFound))
	if r := f.get(t, "/api/things/sensor-1"); r.code != 404 {
		t.Errorf("wrapped not found: %d %s", r.code, r.body)
	}
}

type errDeadline struct{}

func (errDeadline) Error() string   { return "deadline" }
func (errDeadline) Is(e error) bool { return e == context.DeadlineExceeded }

func TestShadowThatIsNotJSONIs500(t *testing.T) {
	f := newFixture(t, Config{})
	api := New(Config{}, badShadowStore{f.store}, nil, nil)
	defer api.Close()
	rec := httptest.NewRecorder()
	api.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/api/things/x/shadow", nil))
	if rec.Code != 500 || strings.Contains(rec.Body.String(), "{{") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

type badShadowStore struct{ *fakeStore }

func (badShadowStore) Shadow(ctx context.Context, name string) ([]byte, error) {
	return []byte("{{not json"), nil
}

func TestPanicIs500(t *testing.T) {
	api := New(Config{}, panicStore{newFakeStore()}, nil, slog.New(slog.DiscardHandler))
	defer api.Close()
	rec := httptest.NewRecorder()
	api.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/api/thing-types", nil))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), `"internal error"`) || strings.Contains(rec.Body.String(), "boom") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

type panicStore struct{ *fakeStore }

func (panicStore) ThingTypes(ctx context.Context) ([]registry.ThingType, error) { panic("boom") }

func TestValidName(t *testing.T) {
	for _, s := range []string{"a", "A-Z_0:9", strings.Repeat("x", 128)} {
		if !validName(s) {
			t.Errorf("validName(%q) = false", s)
		}
	}
	for _, s := range []string{"", strings.Repeat("x", 129), "a b", "a/b", "é", "a.b", "a\x00"} {
		if validName(s) {
			t.Errorf("validName(%q) = true", s)
		}
	}
}
