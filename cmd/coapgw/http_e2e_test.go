package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// httpGet sends GET url with an optional bearer token and Host header and returns the status.
func httpGet(t *testing.T, url, token, host string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestHTTPAPIOffLoopback: a gateway whose HTTP server listens on every interface generates a
// token into its data dir (mode 0600) and says where; the API then answers 401 without it, 200
// with it; /healthz and /readyz stay open; --metrics-auth puts /metrics behind it too.
func TestHTTPAPIOffLoopback(t *testing.T) {
	dir := t.TempDir()
	g := startGWAt(t, dir, freeTCPPort(t), "--process", "local", "--metrics-auth")
	base := "http://" + g.http

	tokenFile := filepath.Join(dir, "http-token")
	fi, err := os.Stat(tokenFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("http-token: %v %v, want a 0600 file", fi, err)
	}
	b, _ := os.ReadFile(tokenFile)
	token := strings.TrimSpace(string(b))
	if !strings.Contains(g.stderr.String(), tokenFile) || strings.Contains(g.stderr.String(), token) {
		t.Fatalf("the log must name the token's file and never the token:\n%s", g.stderr)
	}

	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/api/things", "", 401},
		{"/api/things", "wrong-token-wrong-token", 401},
		{"/api/things", token, 200},
		{"/api/status", "", 401},
		{"/metrics", "", 401},
		{"/metrics", token, 200},
		{"/healthz", "", 200},
		{"/readyz", "", 200},
	} {
		if got := httpGet(t, base+c.path, c.token, ""); got != c.want {
			t.Errorf("GET %s (token %q): %d, want %d", c.path, c.token, got, c.want)
		}
	}
}

// TestHTTPAPILoopbackHost: on loopback, reads need no token, but a request naming another host
// (a DNS rebinding page in a browser) is refused.
func TestHTTPAPILoopbackHost(t *testing.T) {
	g := startGW(t, t.TempDir(), "--process", "local", "--http-allowed-hosts", "gw.example.internal")
	base := "http://" + g.http
	for _, c := range []struct {
		host string
		want int
	}{
		{"", 200},
		{"localhost:8080", 200},
		{"gw.example.internal", 200},
		{"attacker.example", 403},
	} {
		if got := httpGet(t, base+"/api/things", "", c.host); got != c.want {
			t.Errorf("GET /api/things with Host %q: %d, want %d", c.host, got, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(g.dataDir, "http-token")); !os.IsNotExist(err) {
		t.Errorf("a loopback gateway without --metrics-auth generated a token file: %v", err)
	}
}
