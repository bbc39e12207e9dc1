package httpapi

import (
	_ "embed"
	"net/http"
)

// openAPIDocument is the OpenAPI 3 description of every /api/ route: paths, parameters, the
// schemas of the answers and the access rules (openapi.json). openapi_test.go checks that the
// routes Register mounts and the documented ones are the same, and that a real server's answers
// over a real registry validate against it.
//
//go:embed openapi.json
var openAPIDocument []byte

// serveOpenAPI answers GET /api/openapi.json with openAPIDocument. Like the dashboard's static
// files it is open (no token, any Host): it holds no data.
func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(openAPIDocument)
	}
}
