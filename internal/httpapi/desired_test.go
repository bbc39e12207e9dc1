package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/coapgw/coapgw/internal/registry"
)

// desiredStore is the fake store with UpdateDesired answering as scripted.
type desiredStore struct {
	*fakeStore
	got  string // the last body
	err  error
	doc  string
	name string
}

func (d *desiredStore) UpdateDesired(_ context.Context, name string, body []byte) ([]byte, error) {
	d.name, d.got = name, string(body)
	if d.err != nil {
		return nil, d.err
	}
	return []byte(d.doc), nil
}

// TestPutShadow: PUT /api/things/{name}/shadow needs the token even on loopback, hands the body
// to the store, and maps its errors: 400 with the reason, 404, 409, 413 for a huge body.
func TestPutShadow(t *testing.T) {
	ds := &desiredStore{fakeStore: newFakeStore(), doc: `{"state":{"desired":{"a":1}},"version":2}`}
	a := New(Config{Token: testToken}, ds, func() Status { return Status{} }, slog.New(slog.DiscardHandler))
	t.Cleanup(a.Close)
	h := a.Handler()
	body := `{"state":{"desired":{"a":1}}}`
	auth := []string{"Authorization", "Bearer " + testToken}

	wantUnauthorized(t, "no token", callBody(t, h, "PUT", "/api/things/dev-1/shadow", "localhost", body))
	r := callBody(t, h, "PUT", "/api/things/dev-1/shadow", "localhost", body, auth...)
	if r.code != 200 || string(r.body) != ds.doc+"\n" || ds.got != body || ds.name != "dev-1" {
		t.Fatalf("PUT: %d %s (store got %q for %q)", r.code, r.body, ds.got, ds.name)
	}
	for _, tc := range []struct {
		err  error
		code int
		msg  string
	}{
		{&registry.DesiredError{Reason: "state.desired is missing"}, 400, "state.desired is missing"},
		{registry.ErrNotFound, 404, "not found"},
		{registry.ErrVersionConflict, 409, "version conflict"},
	} {
		ds.err = tc.err
		r := callBody(t, h, "PUT", "/api/things/dev-1/shadow", "localhost", body, auth...)
		if r.code != tc.code || !strings.Contains(r.errorMessage(t), tc.msg) {
			t.Errorf("%v: %d %s, want %d %q", tc.err, r.code, r.body, tc.code, tc.msg)
		}
	}
	ds.err = nil
	if r := callBody(t, h, "PUT", "/api/things/dev-1/shadow", "localhost", strings.Repeat(" ", maxShadowRequest+1), auth...); r.code != http.StatusRequestEntityTooLarge {
		t.Errorf("huge body: %d", r.code)
	}
	if r := callBody(t, h, "PUT", "/api/things/bad%20name/shadow", "localhost", body, auth...); r.code != 400 {
		t.Errorf("bad name: %d", r.code)
	}
	// GET still reads the shadow; a store without UpdateDesired has no PUT.
	if r := call(t, h, "GET", "/api/things/dev-1/shadow", "localhost"); r.code == http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", r.code)
	}
	plain := New(Config{Token: testToken}, newFakeStore(), func() Status { return Status{} }, slog.New(slog.DiscardHandler))
	t.Cleanup(plain.Close)
	if r := callBody(t, plain.Handler(), "PUT", "/api/things/dev-1/shadow", "localhost", body, auth...); r.code != http.StatusMethodNotAllowed {
		t.Errorf("PUT without a DesiredStore: %d", r.code)
	}
}
