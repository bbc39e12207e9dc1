package main

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
)

// TestDeleteForgetsThing: a running gateway forgets a deleted thing. With --max-things 2 and two
// things, a third is refused (5.03); after DELETE /api/things/dev-0 it is accepted without a
// restart, and the deleted name comes back under another type (it used to get 5.03 "thing
// limit reached", and 4.00 "exists with type sensor", until a restart).
func TestDeleteForgetsThing(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "token")
	const token = "e2e-forget-token-0123456789abcdef"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := startGW(t, dir, "--process", "local", "--max-things", "2", "--http-token-file", tokenFile)
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	post := func(path string, want coapmsg.Code) {
		t.Helper()
		resp, err := c.Post(path, `{"t":1}`)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if resp.Code != want {
			t.Fatalf("%s: %v %q, want %v", path, resp.Code, resp.Payload, want)
		}
	}
	post("/sensor/dev-0", coapmsg.Changed)
	post("/sensor/dev-1", coapmsg.Changed)
	post("/sensor/dev-2", coapmsg.ServiceUnavailable)
	var th apiThing
	for _, name := range []string{"dev-0", "dev-1"} {
		waitFor(t, name+" applied", func() bool { return getJSON(t, g, "/api/things/"+name, &th) == 200 })
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodDelete, "http://"+g.http+"/api/things/dev-0", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE dev-0: %d, want 204", resp.StatusCode)
	}
	if v := metricValue(t, scrape(t, g), "coapgw_ingest_things"); v != 1 {
		t.Errorf("coapgw_ingest_things after the delete = %v, want 1", v)
	}
	post("/sensor/dev-2", coapmsg.Changed)
	post("/sensor/dev-3", coapmsg.ServiceUnavailable)
	waitFor(t, "dev-2 applied", func() bool { return getJSON(t, g, "/api/things/dev-2", &th) == 200 })

	// The name of a deleted thing comes back with another type.
	req, _ = http.NewRequestWithContext(t.Context(), http.MethodDelete, "http://"+g.http+"/api/things/dev-1", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE dev-1: %d, want 204", resp.StatusCode)
	}
	post("/meter/dev-1", coapmsg.Changed)
	waitFor(t, "dev-1 as a meter", func() bool {
		return getJSON(t, g, "/api/things/dev-1", &th) == 200 && th.Type == "meter"
	})
}
