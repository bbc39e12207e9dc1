package httpapi

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/registry"
)

// TestSetAsideReasonsAndDismiss: /api/errors/reasons counts the records by reason, most
// frequent first; DELETE /api/errors?reason= needs the token (on loopback too), deletes that
// reason's records only and says how many.
func TestSetAsideReasonsAndDismiss(t *testing.T) {
	f := newFixture(t, Config{Token: testToken})
	f.seed() // one "payload is not a JSON object", one "shadow too large"
	for i := range 3 {
		f.store.setAside(registry.SetAside{GW: "gw1", Seq: uint64(50 + i), Thing: "sensor-3", Type: "thermo",
			Reason: "shadow too large", At: t0.Add(time.Duration(10+i) * time.Second)})
	}
	var b struct {
		Reasons []registry.SetAsideReason `json:"reasons"`
	}
	f.get(t, "/api/errors/reasons").decode(t, &b)
	if len(b.Reasons) != 2 || b.Reasons[0].Reason != "shadow too large" || b.Reasons[0].Count != 4 ||
		!b.Reasons[0].Last.Equal(t0.Add(12*time.Second)) || b.Reasons[1].Count != 1 {
		t.Fatalf("reasons %+v", b.Reasons)
	}
	target := "/api/errors?reason=" + url.QueryEscape("shadow too large")
	wantUnauthorized(t, "dismiss without a token", call(t, f.mux, "DELETE", target, "localhost:8080"))
	r := call(t, f.mux, "DELETE", target, "localhost:8080", "Authorization", "Bearer "+testToken)
	if r.code != 200 || strings.TrimSpace(string(r.body)) != `{"dismissed":4}` {
		t.Fatalf("dismiss: %d %s", r.code, r.body)
	}
	if r := f.get(t, "/api/errors"); !strings.Contains(string(r.body), `"total":1`) || strings.Contains(string(r.body), "shadow too large") {
		t.Errorf("after dismissing: %s", r.body)
	}
	for target, code := range map[string]int{"/api/errors": 400, "/api/errors?reason=": 400, "/api/errors?reason=x&limit=1": 400} {
		if r := call(t, f.mux, "DELETE", target, "localhost:8080", "Authorization", "Bearer "+testToken); r.code != code {
			t.Errorf("DELETE %s: %d %s, want %d", target, r.code, r.body, code)
		}
	}
	if r := call(t, f.mux, "DELETE", "/api/errors?reason=nothing", "localhost:8080", "Authorization", "Bearer "+testToken); r.code != 200 ||
		strings.TrimSpace(string(r.body)) != `{"dismissed":0}` {
		t.Errorf("dismissing an unknown reason: %d %s", r.code, r.body)
	}
	if r := f.do(t, http.MethodPost, "/api/errors/reasons"); r.code != 405 {
		t.Errorf("POST reasons: %d", r.code)
	}
	if !strings.Contains(f.logs.String(), "set-aside records dismissed") {
		t.Errorf("the dismissal is not logged:\n%s", f.logs)
	}
}
