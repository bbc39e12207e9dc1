package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDeleteThingAPI: DELETE /api/things/{name} on the real gateway (local mode): refused
// without the token (401) and with a wrong one, then 204 with it; the thing, its shadow and its
// history are gone, another thing stays, and a new record of the name creates it again. It used
// to be 405.
func TestDeleteThingAPI(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "e2e-delete-token-0123456789abcdef"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startGW(t, dir, "--process", "local", "--http-token-file", tokenFile)
	base := "coap://" + g.coap.String()
	for _, dev := range []string{"dev-1", "dev-2"} {
		if code, out, errs := coapgw(t, "send", base+"/sensor/"+dev, `{"temp":21.5}`); code != 0 {
			t.Fatalf("send %s: %d %q %q", dev, code, out, errs)
		}
	}
	var sh apiShadow
	waitFor(t, "both things applied", func() bool {
		return getJSON(t, g, "/api/things/dev-1/shadow", &sh) == 200 && getJSON(t, g, "/api/things/dev-2/shadow", &sh) == 200
	})

	del := func(auth string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodDelete, "http://"+g.http+"/api/things/dev-1", nil)
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := del(""); code != http.StatusUnauthorized {
		t.Fatalf("DELETE without the token: %d, want 401", code)
	}
	if code := del("wrong"); code != http.StatusUnauthorized {
		t.Fatalf("DELETE with a wrong token: %d, want 401", code)
	}
	if code := getJSON(t, g, "/api/things/dev-1", nil); code != 200 {
		t.Fatalf("dev-1 after refused deletes: %d", code)
	}
	if code := del(token); code != http.StatusNoContent {
		t.Fatalf("DELETE with the token: %d, want 204", code)
	}
	for _, path := range []string{"/api/things/dev-1", "/api/things/dev-1/shadow", "/api/things/dev-1/history"} {
		if code := getJSON(t, g, path, nil); code != 404 {
			t.Errorf("GET %s after the delete: %d, want 404", path, code)
		}
	}
	if code := getJSON(t, g, "/api/things/dev-2/shadow", nil); code != 200 {
		t.Errorf("dev-2 after dev-1's delete: %d", code)
	}
	if code := del(token); code != http.StatusNotFound {
		t.Errorf("DELETE again: %d, want 404", code)
	}
	// The name again: a new thing with only the new record.
	if code, out, errs := coapgw(t, "send", base+"/sensor/dev-1", `{"hum":40}`); code != 0 {
		t.Fatalf("send after the delete: %d %q %q", code, out, errs)
	}
	waitFor(t, "dev-1 again", func() bool {
		sh = apiShadow{} // Unmarshal would merge into the old map
		return getJSON(t, g, "/api/things/dev-1/shadow", &sh) == 200
	})
	if len(sh.State.Reported) != 1 || sh.State.Reported["hum"] != 40.0 {
		t.Errorf("dev-1 again reports %v, want only hum", sh.State.Reported)
	}
	if !strings.Contains(g.stderr.String(), "thing deleted") {
		t.Errorf("the delete is not in the log")
	}
}
