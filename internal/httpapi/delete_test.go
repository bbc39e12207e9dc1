package httpapi

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestDeleteThing: DELETE /api/things/{name} needs the token (on loopback too), answers 204 and
// removes the thing; an unknown thing is 404, a bad name 400. It used to be 405. Config.OnDelete
// hears of every authorised delete of a valid name, and of no refused one.
func TestDeleteThing(t *testing.T) {
	for _, public := range []bool{false, true} {
		var deleted []string
		f := newFixture(t, Config{Token: testToken, Public: public, OnDelete: func(name string) { deleted = append(deleted, name) }})
		f.seed()
		wantUnauthorized(t, "delete without a token", call(t, f.mux, "DELETE", "/api/things/sensor-1", "localhost:8080"))
		wantUnauthorized(t, "delete with a wrong token", call(t, f.mux, "DELETE", "/api/things/sensor-1", "localhost:8080", "Authorization", "Bearer nope"))
		if r := call(t, f.mux, "GET", "/api/things/sensor-1", "localhost:8080", "Authorization", "Bearer "+testToken); r.code != 200 {
			t.Fatalf("public=%v: the thing before the delete: %d", public, r.code)
		}
		r := call(t, f.mux, "DELETE", "/api/things/sensor-1", "localhost:8080", "Authorization", "Bearer "+testToken)
		if r.code != http.StatusNoContent || len(r.body) != 0 {
			t.Fatalf("public=%v: delete with the token: %d %s", public, r.code, r.body)
		}
		if r := call(t, f.mux, "GET", "/api/things/sensor-1", "localhost:8080", "Authorization", "Bearer "+testToken); r.code != 404 {
			t.Errorf("public=%v: the thing after the delete: %d", public, r.code)
		}
		if r := call(t, f.mux, "GET", "/api/things/sensor-2", "localhost:8080", "Authorization", "Bearer "+testToken); r.code != 200 {
			t.Errorf("public=%v: another thing after the delete: %d", public, r.code)
		}
		r = call(t, f.mux, "DELETE", "/api/things/sensor-1", "localhost:8080", "Authorization", "Bearer "+testToken)
		if r.code != 404 || !strings.Contains(r.errorMessage(t), "not found") {
			t.Errorf("public=%v: deleting it again: %d %s", public, r.code, r.body)
		}
		if r := call(t, f.mux, "DELETE", "/api/things/bad%20name", "localhost:8080", "Authorization", "Bearer "+testToken); r.code != 400 {
			t.Errorf("public=%v: a bad name: %d %s", public, r.code, r.body)
		}
		if want := []string{"sensor-1", "sensor-1"}; !slices.Equal(deleted, want) {
			t.Errorf("public=%v: OnDelete heard %q, want %q", public, deleted, want)
		}
		if !strings.Contains(f.logs.String(), "thing deleted") {
			t.Errorf("the delete is not logged:\n%s", f.logs)
		}
	}
	// Without a configured token nothing can be deleted.
	f := newFixture(t, Config{})
	f.seed()
	if r := call(t, f.mux, "DELETE", "/api/things/sensor-1", "localhost", "Authorization", "Bearer x"); r.code != http.StatusForbidden {
		t.Errorf("delete without a configured token: %d %s", r.code, r.body)
	}
}
