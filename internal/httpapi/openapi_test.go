package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/registry"
)

// loadOpenAPI parses and validates the embedded document (a malformed document, a dangling
// $ref or an invalid schema fails here).
func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(openAPIDocument)
	if err != nil {
		t.Fatalf("openapi.json does not parse: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI 3 document: %v", err)
	}
	return doc
}

// mountedRoute is one route the package's source registers: its pattern ("GET /api/x" or
// "/api/x"), the methods it serves when the source says (nil when the handler decides), and
// where it is registered.
type mountedRoute struct {
	pattern, method, path string
	methods               []string
	at                    string
}

// queryParam is a query parameter a handler accepts (a literal argument of parseQuery).
type queryParam struct{ name, at string }

// mountedRoutes reads every mux.Handle, mux.HandleFunc and api(...) call in the package's
// non-test files: the routes Register mounts, whichever helper added them. A route registered
// with a pattern that is not a string literal fails the test, so that none goes unseen. It
// also returns the query parameters the handlers accept: the literal arguments of parseQuery.
func mountedRoutes(t *testing.T) ([]mountedRoute, []queryParam) {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var routes []mountedRoute
	var params []queryParam
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			getOnly := false
			switch fn := call.Fun.(type) {
			case *ast.Ident: // the api(pattern, h) helper of Register: GET and HEAD
				if fn.Name == "parseQuery" {
					for _, a := range call.Args[1:] {
						if lit, ok := a.(*ast.BasicLit); ok && lit.Kind == token.STRING {
							name, _ := strconv.Unquote(lit.Value)
							params = append(params, queryParam{name, fset.Position(a.Pos()).String()})
						}
					}
					return true
				}
				if fn.Name != "api" {
					return true
				}
				getOnly = true
			case *ast.SelectorExpr:
				if x, ok := fn.X.(*ast.Ident); !ok || x.Name != "mux" || fn.Sel.Name != "Handle" && fn.Sel.Name != "HandleFunc" {
					return true
				}
			default:
				return true
			}
			at := fset.Position(call.Pos()).String()
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok {
				// The helper's own mux.Handle(pattern, ...) inside api.
				if id, isIdent := call.Args[0].(*ast.Ident); isIdent && id.Name == "pattern" {
					return true
				}
				t.Errorf("%s: a route registered with a pattern that is not a string literal; this test cannot see it", at)
				return true
			}
			pattern, _ := strconv.Unquote(lit.Value)
			r := mountedRoute{pattern: pattern, path: pattern, at: at}
			if m, p, ok := strings.Cut(pattern, " "); ok {
				r.method, r.path = m, p
				r.methods = []string{m}
			} else if getOnly {
				r.methods = []string{http.MethodGet}
			}
			routes = append(routes, r)
			return true
		})
	}
	return routes, params
}

// documentedRoute says whether the route is part of the documented API: everything under
// /api/ but the catch-all that answers 404 for unknown /api/ paths.
func documentedRoute(path string) bool { return strings.HasPrefix(path, "/api/") && path != "/api/" }

// TestOpenAPIDocumentsEveryRoute: every /api/ route Register mounts is in openapi.json with
// its method, and every documented operation is served by a mounted route. A route added
// without documenting it fails here, naming the route and where it is registered; so does a
// query parameter a handler accepts that no operation documents.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	doc := loadOpenAPI(t)
	routes, params := mountedRoutes(t)
	if len(routes) < 10 {
		t.Fatalf("read only %d routes from the source: %+v", len(routes), routes)
	}
	// The source reading is checked against the real mux: each pattern read is the one the mux
	// matches for a request to it.
	reg := openTestRegistry(t)
	mux := http.NewServeMux()
	New(Config{}, reg, nil, nil).Register(mux)
	for _, r := range routes {
		m := r.method
		if m == "" {
			m = http.MethodGet
		}
		req := httptest.NewRequest(m, strings.NewReplacer("{name}", "dev-1", "{$}", "").Replace(r.path), nil)
		if _, got := mux.Handler(req); got != r.pattern {
			t.Errorf("%s: read route %q from the source, but the mux serves %s %s with %q", r.at, r.pattern, m, req.URL.Path, got)
		}
	}

	mounted := map[string][]mountedRoute{} // path → its routes
	for _, r := range routes {
		if !documentedRoute(r.path) {
			continue
		}
		mounted[r.path] = append(mounted[r.path], r)
		item := doc.Paths.Find(r.path)
		if item == nil {
			t.Errorf("route %q (%s) is not documented: add the path %q to internal/httpapi/openapi.json", r.pattern, r.at, r.path)
			continue
		}
		for _, m := range r.methods {
			if item.GetOperation(m) == nil {
				t.Errorf("route %q (%s) is not documented: add the %s operation to path %q in internal/httpapi/openapi.json", r.pattern, r.at, m, r.path)
			}
		}
	}
	documentedParams := map[string]bool{}
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			for _, p := range op.Parameters {
				if p.Value != nil && p.Value.In == "query" {
					documentedParams[p.Value.Name] = true
				}
			}
		}
	}
	if len(params) < 5 {
		t.Fatalf("read only %d query parameters from the source: %v", len(params), params)
	}
	for _, p := range params {
		if !documentedParams[p.name] {
			t.Errorf("query parameter %q (%s) is not documented on any operation in internal/httpapi/openapi.json", p.name, p.at)
		}
	}
	for path, item := range doc.Paths.Map() {
		rs, ok := mounted[path]
		if !ok {
			t.Errorf("openapi.json documents %q, which no route serves", path)
			continue
		}
		for method := range item.Operations() {
			served := slices.ContainsFunc(rs, func(r mountedRoute) bool { return r.methods == nil || slices.Contains(r.methods, method) })
			if !served {
				t.Errorf("openapi.json documents %s %s, which no route serves (mounted: %v)", method, path, rs)
			}
		}
	}
}

// openTestRegistry is a real SQLite registry with two thing types, three things with history
// and two set-aside records (a type conflict with a JSON payload, and one that is not JSON).
func openTestRegistry(t *testing.T) *registry.Registry {
	t.Helper()
	reg, err := registry.Open(filepath.Join(t.TempDir(), "registry.db"), registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	now := time.Now()
	recs := []record.Record{
		processortest.Rec("gw-1", "sensor", "dev-1", now.Add(-3*time.Minute), `{"temp":21.5,"hum":40,"env":{"co2":410}}`),
		processortest.Rec("gw-1", "sensor", "dev-1", now.Add(-2*time.Minute), `{"temp":22,"fw":"1.2.0"}`),
		processortest.Rec("gw-1", "sensor", "dev-2", now.Add(-2*time.Minute), `{"temp":19}`),
		processortest.Rec("gw-1", "meter", "m-1", now.Add(-time.Minute), `{"kwh":1.5}`),
		processortest.Rec("gw-1", "meter", "dev-1", now.Add(-time.Minute), `{"kwh":2}`), // dev-1 is a sensor
		processortest.Rec("gw-1", "sensor", "dev-3", now.Add(-time.Minute), "\xff not json"),
	}
	for i := range recs {
		recs[i].Seq = uint64(i + 1)
	}
	if _, err := reg.Apply(context.Background(), processortest.Batch(t, recs...)); err != nil {
		t.Fatal(err)
	}
	return reg
}

// apiCase is one request of TestOpenAPIAnswersValidate and the status it must get.
type apiCase struct {
	method, target, body string
	token                bool   // send the bearer token
	host                 string // another Host header
	want                 int
}

// TestOpenAPIAnswersValidate: a real server over loopback, on a real SQLite registry, answers
// requests to every documented operation (and its documented errors), and each answer — status,
// headers, body — validates against openapi.json; each request that succeeds validates too.
// Every documented operation must have been answered with a 2xx at least once.
func TestOpenAPIAnswersValidate(t *testing.T) {
	doc := loadOpenAPI(t)
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	const token = "0123456789abcdef0123456789abcdef"
	reg := openTestRegistry(t)
	started := time.Now().Add(-time.Hour)
	api := New(Config{Token: token}, reg, func() Status {
		return Status{Version: "v1.2.3", StartedAt: started, Ready: true, AcceptedPerSecond: 12.5, SpoolDepth: 3, SpoolBytes: 4096, ProcessorLagSeconds: 0.25}
	}, nil)
	t.Cleanup(api.Close)
	srv := httptest.NewServer(api.Handler()) // 127.0.0.1:<port>
	t.Cleanup(srv.Close)

	reasons, err := reg.SetAsideReasons(t.Context())
	if err != nil || len(reasons) != 2 {
		t.Fatalf("set-aside reasons %v, %v: want 2", reasons, err)
	}
	cases := []apiCase{
		{method: "GET", target: "/api/openapi.json", want: 200},
		{method: "GET", target: "/api/thing-types", want: 200},
		{method: "GET", target: "/api/thing-types?x=1", want: 400},
		{method: "GET", target: "/api/things", want: 200},
		{method: "GET", target: "/api/things?type=sensor&limit=1", want: 200}, // with nextToken
		{method: "GET", target: "/api/things?prefix=dev-&limit=1000", want: 200},
		{method: "GET", target: "/api/things?limit=0", want: 400},
		{method: "GET", target: "/api/things?sort=name&order=asc&latest=3", want: 200}, // with latest values
		{method: "GET", target: "/api/things?sort=messages&latest=20&limit=1", want: 200},
		{method: "GET", target: "/api/things?sort=colour", want: 400},
		{method: "GET", target: "/api/things?latest=21", want: 400},
		{method: "GET", target: "/api/things", host: "rebind.example", want: 403},
		{method: "GET", target: "/api/things/dev-1", want: 200},
		{method: "GET", target: "/api/things/nobody", want: 404},
		{method: "GET", target: "/api/things/bad%20name", want: 400},
		{method: "GET", target: "/api/things/dev-1/shadow", want: 200},
		{method: "PUT", target: "/api/things/dev-1/shadow", body: `{"state":{"desired":{"interval":60,"temp":25}}}`, token: true, want: 200},
		{method: "GET", target: "/api/things/dev-1/shadow", want: 200}, // now with desired and delta
		{method: "PUT", target: "/api/things/dev-1/shadow", body: `{"state":{"desired":{"interval":30}},"version":1}`, token: true, want: 409},
		{method: "PUT", target: "/api/things/dev-1/shadow", body: `{"state":{"reported":{"temp":1}}}`, token: true, want: 400},
		{method: "PUT", target: "/api/things/dev-1/shadow", body: `{"state":{"desired":{"interval":60}}}`, want: 401},
		{method: "PUT", target: "/api/things/nobody/shadow", body: `{"state":{"desired":{"interval":60}}}`, token: true, want: 404},
		{method: "GET", target: "/api/things/dev-1/history", want: 200},
		{method: "GET", target: "/api/things/dev-1/history?property=temp&since=1h&limit=10", want: 200},
		{method: "GET", target: "/api/things/dev-1/history?since=yesterday", want: 400},
		{method: "GET", target: "/api/things/nobody/history", want: 404},
		{method: "GET", target: "/api/things/dev-1/history.csv", want: 200},
		{method: "GET", target: "/api/things/dev-1/history.csv?property=env.co2", want: 200},
		{method: "GET", target: "/api/things/nobody/history.csv", want: 404},
		{method: "GET", target: "/api/errors", want: 200},
		{method: "GET", target: "/api/errors?limit=1", want: 200},
		{method: "GET", target: "/api/errors?cursor=not-a-cursor", want: 400},
		{method: "GET", target: "/api/errors/reasons", want: 200},
		{method: "DELETE", target: "/api/errors?reason=" + url.QueryEscape(reasons[0].Reason), want: 401},
		{method: "DELETE", target: "/api/errors", token: true, want: 400},
		{method: "DELETE", target: "/api/errors?reason=" + url.QueryEscape(reasons[0].Reason), token: true, want: 200},
		{method: "POST", target: "/api/errors/retry?reason=" + url.QueryEscape(reasons[1].Reason), want: 401},
		{method: "POST", target: "/api/errors/retry", token: true, want: 400},
		{method: "POST", target: "/api/errors/retry?reason=no+such+reason", token: true, want: 404},
		{method: "POST", target: "/api/errors/retry?gw=&seq=x", token: true, want: 400},
		{method: "POST", target: "/api/errors/retry?reason=" + url.QueryEscape(reasons[1].Reason), token: true, want: 200},
		{method: "GET", target: "/api/status", want: 200},
		{method: "GET", target: "/api/events", want: 200},
		{method: "POST", target: "/api/login", body: `{"token":"` + token + `"}`, want: 204},
		{method: "POST", target: "/api/login", body: `{"token":"wrong"}`, want: 401},
		{method: "POST", target: "/api/login", body: `[]`, want: 400},
		{method: "POST", target: "/api/logout", want: 204},
		{method: "DELETE", target: "/api/things/dev-2", want: 401},
		{method: "DELETE", target: "/api/things/dev-2", token: true, want: 204},
		{method: "DELETE", target: "/api/things/dev-2", token: true, want: 404},
	}
	succeeded := map[string]bool{} // "GET /api/things" of each operation answered 2xx
	for _, c := range cases {
		name := c.method + " " + c.target
		status, op := checkAgainstOpenAPI(t, router, srv.URL, token, c)
		if status != c.want {
			t.Errorf("%s: status %d, want %d", name, status, c.want)
		}
		if status/100 == 2 {
			succeeded[op] = true
		}
	}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			if !succeeded[method+" "+path] {
				t.Errorf("documented %s %s was never answered with a 2xx by the test: add a case", method, path)
			}
		}
	}
}

// checkAgainstOpenAPI sends c to the server at base and validates the answer (and, for a 2xx,
// the request) against the document; it returns the status and the documented operation
// ("GET /api/things/{name}").
func checkAgainstOpenAPI(t *testing.T, router routers.Router, base, token string, c apiCase) (int, string) {
	t.Helper()
	name := c.method + " " + c.target
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, c.method, base+c.target, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if c.host != "" {
		req.Host = c.host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	defer resp.Body.Close()
	stream := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	var body []byte
	if !stream { // the event stream stays open: its headers are the answer
		if body, err = io.ReadAll(resp.Body); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}

	// The document is matched with a request of its own: the one sent has been read.
	vreq, _ := http.NewRequest(c.method, base+c.target, bytes.NewReader([]byte(c.body)))
	vreq.Header = req.Header.Clone()
	route, params, err := router.FindRoute(vreq)
	if err != nil {
		t.Errorf("%s: not in openapi.json: %v", name, err)
		return resp.StatusCode, ""
	}
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if resp.StatusCode/100 == 2 {
		if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
			t.Errorf("%s: the request does not validate against openapi.json: %v", name, err)
		}
	}
	in.Options = &openapi3filter.Options{IncludeResponseStatus: true, ExcludeResponseBody: stream}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode,
		Header: resp.Header, Body: io.NopCloser(bytes.NewReader(body)), Options: in.Options}
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		t.Errorf("%s: answer %d %.300s does not validate against openapi.json: %v", name, resp.StatusCode, body, err)
	}
	return resp.StatusCode, fmt.Sprintf("%s %s", c.method, route.Path)
}
