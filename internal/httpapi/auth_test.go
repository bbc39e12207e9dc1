package httpapi

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const testToken = "s3cret-token-0123456789abcdef"

// call sends one request to h with the given Host and headers (name, value pairs).
func call(t *testing.T, h http.Handler, method, target, host string, hdr ...string) response {
	t.Helper()
	return callBody(t, h, method, target, host, "", hdr...)
}

// login posts body to /api/login.
func login(t *testing.T, h http.Handler, host, body string, hdr ...string) response {
	t.Helper()
	return callBody(t, h, http.MethodPost, "/api/login", host, body, hdr...)
}

func callBody(t *testing.T, h http.Handler, method, target, host, body string, hdr ...string) response {
	t.Helper()
	// A stream that opens by mistake ends after a while, and the test fails instead of hanging.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, method, target, strings.NewReader(body))
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return response{rec.Code, rec.Header(), rec.Body.Bytes()}
}

// testWrite mounts a write route, as later issues add them, on f's mux.
func (f *fixture) testWrite() {
	f.mux.Handle("POST /api/test-write", f.api.write(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"written": true})
	})))
}

func wantUnauthorized(t *testing.T, what string, r response) {
	t.Helper()
	if r.code != http.StatusUnauthorized {
		t.Fatalf("%s: %d %s, want 401", what, r.code, r.body)
	}
	if v := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(v, "Bearer ") {
		t.Errorf("%s: WWW-Authenticate = %q", what, v)
	}
	r.errorMessage(t)
}

func TestLoopbackReadsAreOpenAndHostIsChecked(t *testing.T) {
	f := newFixture(t, Config{Token: testToken, AllowedHosts: []string{"Gateway.LAN", "[fd00::7]:9"}})
	f.seed()
	for _, host := range []string{"localhost:8080", "localhost", "LOCALHOST.:1", "127.0.0.1:8080", "127.0.0.2", "[::1]:8080", "[::1]",
		"gateway.lan:8080", "gateway.lan", "[fd00::7]:8080"} {
		if r := call(t, f.mux, "GET", "/api/things", host); r.code != 200 {
			t.Errorf("Host %q: %d %s", host, r.code, r.body)
		}
		if r := call(t, f.mux, "GET", "/api/events?x=1", host); r.code != 400 {
			t.Errorf("Host %q, events: %d %s, want the stream's own 400 for a parameter", host, r.code, r.body)
		}
	}
	// DNS rebinding: a page of another site, its name resolving to 127.0.0.1, sends its own name.
	for _, host := range []string{"attacker.example:8080", "attacker.example", "localhost.attacker.example", "127.0.0.1.nip.io:8080",
		"gateway.lan.evil", "10.0.0.5:8080", "[fd00::8]:8080", ""} {
		for _, target := range []string{"/api/things", "/api/events", "/api/status", "/api/nope"} {
			r := call(t, f.mux, "GET", target, host)
			if r.code != http.StatusForbidden || !strings.Contains(r.errorMessage(t), "not a name of this gateway") {
				t.Errorf("Host %q %s: %d %s, want 403", host, target, r.code, r.body)
			}
		}
		// The token does not make a foreign name acceptable on loopback.
		if r := call(t, f.mux, "GET", "/api/things", host, "Authorization", "Bearer "+testToken); r.code != http.StatusForbidden {
			t.Errorf("Host %q with the token: %d", host, r.code)
		}
		if r := login(t, f.mux, host, `{"token":"`+testToken+`"}`); r.code != http.StatusForbidden {
			t.Errorf("Host %q, login: %d", host, r.code)
		}
	}
	// The dashboard's files hold no data.
	if r := call(t, f.mux, "GET", "/", "attacker.example"); r.code != 200 {
		t.Errorf("index: %d", r.code)
	}
	// Neither are the gateway's own routes this package's business.
	if r := call(t, f.mux, "GET", "/healthz", "attacker.example"); r.code != 200 {
		t.Errorf("/healthz: %d", r.code)
	}
}

func TestPublicNeedsTheToken(t *testing.T) {
	f := newFixture(t, Config{Token: testToken, Public: true})
	f.seed()
	for _, target := range []string{"/api/things", "/api/thing-types", "/api/things/sensor-1", "/api/things/sensor-1/shadow",
		"/api/things/sensor-1/history", "/api/things/sensor-1/history.csv", "/api/errors", "/api/status", "/api/events", "/api/nope"} {
		wantUnauthorized(t, target+" without a token", call(t, f.mux, "GET", target, "gw.example:8080"))
		wantUnauthorized(t, target+" with a wrong token", call(t, f.mux, "GET", target, "gw.example:8080", "Authorization", "Bearer "+testToken+"x"))
	}
	for _, auth := range []string{"Bearer " + testToken[:len(testToken)-1], "Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+testToken)),
		testToken, "Bearer", "Bearer  ", "Token " + testToken} {
		r := call(t, f.mux, "GET", "/api/things", "gw.example", "Authorization", auth)
		wantUnauthorized(t, "Authorization: "+auth, r)
		if !strings.Contains(r.header.Get("WWW-Authenticate"), "invalid_token") {
			t.Errorf("Authorization %q: WWW-Authenticate = %q", auth, r.header.Get("WWW-Authenticate"))
		}
	}
	// The right token, with any Host: off loopback the token is the check.
	for _, auth := range []string{"Bearer " + testToken, "bearer " + testToken, "Bearer  " + testToken + " "} {
		r := call(t, f.mux, "GET", "/api/things/sensor-1", "192.0.2.10:8080", "Authorization", auth)
		if r.code != 200 || !strings.Contains(string(r.body), `"sensor-1"`) {
			t.Errorf("Authorization %q: %d %s", auth, r.code, r.body)
		}
	}
	if r := call(t, f.mux, "GET", "/api/nope", "gw", "Authorization", "Bearer "+testToken); r.code != 404 {
		t.Errorf("unknown route with the token: %d", r.code)
	}
	// The dashboard loads without the token: it asks for it.
	for _, target := range []string{"/", "/static/app.js"} {
		if r := call(t, f.mux, "GET", target, "gw.example"); r.code != 200 {
			t.Errorf("%s: %d", target, r.code)
		}
	}

	// Public without a token configured: nothing under /api/ can be had.
	g := newFixture(t, Config{Public: true})
	r := call(t, g.mux, "GET", "/api/things", "gw", "Authorization", "Bearer ")
	if r.code != http.StatusForbidden || !strings.Contains(r.errorMessage(t), "none configured") {
		t.Errorf("public without a token: %d %s", r.code, r.body)
	}
}

func TestWritesAlwaysNeedTheToken(t *testing.T) {
	for _, public := range []bool{false, true} {
		f := newFixture(t, Config{Token: testToken, Public: public})
		f.testWrite()
		wantUnauthorized(t, "write without a token", call(t, f.mux, "POST", "/api/test-write", "localhost:8080"))
		wantUnauthorized(t, "write with a wrong token", call(t, f.mux, "POST", "/api/test-write", "localhost:8080", "Authorization", "Bearer nope"))
		if r := call(t, f.mux, "POST", "/api/test-write", "localhost:8080", "Authorization", "Bearer "+testToken); r.code != 200 {
			t.Errorf("public=%v: write with the token: %d %s", public, r.code, r.body)
		}
		if !public {
			if r := call(t, f.mux, "POST", "/api/test-write", "evil.example", "Authorization", "Bearer "+testToken); r.code != 403 {
				t.Errorf("write with the token and a foreign Host: %d", r.code)
			}
		}
		// The session cookie counts, from this origin only (another site cannot forge a write
		// with the browser's cookie).
		login := login(t, f.mux, "localhost:8080", `{"token":"`+testToken+`"}`)
		cookie := sessionCookie(t, login)
		if r := call(t, f.mux, "POST", "/api/test-write", "localhost:8080", "Cookie", cookie.String(), "Origin", "http://localhost:8080"); r.code != 200 {
			t.Errorf("public=%v: write with the session: %d %s", public, r.code, r.body)
		}
		wantUnauthorized(t, "write with the session from another origin",
			call(t, f.mux, "POST", "/api/test-write", "localhost:8080", "Cookie", cookie.String(), "Origin", "http://evil.example"))
	}
	// On loopback without a token, writes cannot be made at all.
	f := newFixture(t, Config{})
	f.testWrite()
	if r := call(t, f.mux, "POST", "/api/test-write", "localhost", "Authorization", "Bearer x"); r.code != http.StatusForbidden {
		t.Errorf("write without a configured token: %d %s", r.code, r.body)
	}
	if r := call(t, f.mux, "GET", "/api/things", "localhost"); r.code != 200 {
		t.Errorf("read without a configured token on loopback: %d", r.code)
	}
}

func sessionCookie(t *testing.T, r response) *http.Cookie {
	t.Helper()
	if r.code != http.StatusNoContent {
		t.Fatalf("login: %d %s", r.code, r.body)
	}
	cookies, err := http.ParseSetCookie(r.header.Get("Set-Cookie"))
	if err != nil {
		t.Fatalf("Set-Cookie %q: %v", r.header.Get("Set-Cookie"), err)
	}
	c := cookies
	if c.Name != SessionCookie || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge != 0 || !c.Expires.IsZero() {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/, a browser-session cookie", c)
	}
	if strings.Contains(c.Value, testToken) {
		t.Fatalf("the cookie holds the token: %q", c.Value)
	}
	return &http.Cookie{Name: c.Name, Value: c.Value}
}

func TestLoginSession(t *testing.T) {
	now := t0
	cfg := Config{Token: testToken, Public: true, SessionTTL: time.Hour, Now: func() time.Time { return now }}
	f := newFixture(t, cfg)
	f.seed()

	for body, want := range map[string]int{
		`{"token":"wrong"}`: 401, `{"token":""}`: 400, `{}`: 400, `not json`: 400, ``: 400,
		`{"token":"` + strings.Repeat("x", 8<<10) + `"}`: 400,
	} {
		r := login(t, f.mux, "gw:8080", body)
		if r.code != want || r.header.Get("Set-Cookie") != "" {
			t.Errorf("login %.30q: %d %v, want %d without a cookie", body, r.code, r.header, want)
		}
	}
	if r := call(t, f.mux, "GET", "/api/login", "gw:8080"); r.code != 405 || r.header.Get("Allow") != "POST" {
		t.Errorf("GET /api/login: %d %v", r.code, r.header)
	}
	if r := login(t, f.mux, "gw:8080", `{"token":"`+testToken+`"}`, "Origin", "http://evil.example"); r.code != 403 {
		t.Errorf("login from another site: %d", r.code)
	}

	cookie := sessionCookie(t, login(t, f.mux, "gw:8080", `{"token":"`+testToken+`"}`, "Origin", "http://gw:8080"))
	if r := call(t, f.mux, "GET", "/api/things/sensor-1", "gw:8080", "Cookie", cookie.String()); r.code != 200 {
		t.Fatalf("read with the session: %d %s", r.code, r.body)
	}
	// A bearer header, when sent, decides alone.
	wantUnauthorized(t, "session and a wrong bearer", call(t, f.mux, "GET", "/api/things", "gw", "Cookie", cookie.String(), "Authorization", "Bearer x"))
	// A forged or altered session is refused.
	exp, sig, _ := strings.Cut(cookie.Value, ".")
	for _, v := range []string{"", "x", exp, exp + ".", "9" + exp + "." + sig, exp + "." + sig[1:], exp + "." + strings.ToUpper(sig)} {
		wantUnauthorized(t, "session "+v, call(t, f.mux, "GET", "/api/things", "gw", "Cookie", SessionCookie+"="+v))
	}
	// A session of another token (the token was changed) is refused.
	other := newFixture(t, Config{Token: testToken + "2", Public: true, Now: cfg.Now})
	wantUnauthorized(t, "session after a token change", call(t, other.mux, "GET", "/api/things", "gw", "Cookie", cookie.String()))
	// A session ends after SessionTTL.
	now = now.Add(59 * time.Minute)
	if r := call(t, f.mux, "GET", "/api/things", "gw", "Cookie", cookie.String()); r.code != 200 {
		t.Errorf("session before its end: %d", r.code)
	}
	now = now.Add(time.Minute)
	wantUnauthorized(t, "expired session", call(t, f.mux, "GET", "/api/things", "gw", "Cookie", cookie.String()))

	r := call(t, f.mux, "POST", "/api/logout", "gw")
	if c, err := http.ParseSetCookie(r.header.Get("Set-Cookie")); r.code != 204 || err != nil || c.Name != SessionCookie || c.MaxAge >= 0 {
		t.Errorf("logout: %d %v", r.code, r.header)
	}
}

// The event stream cannot send headers; the browser's session cookie opens it.
func TestEventStreamWithSession(t *testing.T) {
	f := newFixture(t, Config{Token: testToken, Public: true, Coalesce: time.Millisecond})
	ts := f.serve(t)
	resp, err := ts.Client().Get(ts.URL + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("events without a session: %d", resp.StatusCode)
	}
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Transport: ts.Client().Transport, Jar: jar}
	resp, err = client.Post(ts.URL+"/api/login", "application/json", strings.NewReader(`{"token":"`+testToken+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	s := openEvents(t, client, ts.URL).read()
	s.nextComment(t, 5*time.Second)
	f.store.report("dev-1", "t", t0, map[string]any{"x": 1})
	f.api.Notify("dev-1")
	if ev := s.next(t, "thing", 5*time.Second); !strings.Contains(ev.data, "dev-1") {
		t.Fatalf("event %+v", ev)
	}
}

func TestRequireToken(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up 1\n") })
	h := RequireToken(testToken, metrics)
	wantUnauthorized(t, "no token", call(t, h, "GET", "/metrics", "gw"))
	wantUnauthorized(t, "wrong token", call(t, h, "GET", "/metrics", "gw", "Authorization", "Bearer "+testToken+"0"))
	wantUnauthorized(t, "basic", call(t, h, "GET", "/metrics", "gw", "Authorization", "Basic "+testToken))
	if r := call(t, h, "GET", "/metrics", "gw", "Authorization", "Bearer "+testToken); r.code != 200 || string(r.body) != "up 1\n" {
		t.Errorf("right token: %d %q", r.code, r.body)
	}
	wantUnauthorized(t, "no token configured", call(t, RequireToken("", metrics), "GET", "/metrics", "gw", "Authorization", "Bearer "))
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "127.1.2.3:1": true, "[::1]:8080": true, "localhost:8080": true, "LocalHost:0": true, "127.0.0.1": true,
		":8080": false, "0.0.0.0:8080": false, "[::]:8080": false, "192.168.1.5:8080": false, "gw.example:8080": false, "": false,
		"[::ffff:127.0.0.1]:80": true,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v", addr, got)
		}
	}
}

func TestLoadOrCreateToken(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "data", "http-token")
	tok, created, err := LoadOrCreateToken(path)
	if err != nil || !created {
		t.Fatalf("create: %q %v %v", tok, created, err)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(tok); err != nil || len(raw) != 32 {
		t.Fatalf("token %q: %d bytes, %v; want 32 random bytes base64url", tok, len(raw), err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v, want mode 0600", st.Mode(), err)
	}
	if b, _ := os.ReadFile(path); string(b) != tok+"\n" {
		t.Errorf("file holds %q", b)
	}
	again, created, err := LoadOrCreateToken(path)
	if err != nil || created || again != tok {
		t.Fatalf("restart: %q %v %v, want the same token", again, created, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
	other, _, _ := LoadOrCreateToken(filepath.Join(dir, "other"))
	if other == tok {
		t.Error("two token files, one token")
	}

	// A token the operator wrote.
	own := filepath.Join(dir, "own")
	os.WriteFile(own, []byte("  "+testToken+"\r\n"), 0o640)
	if got, created, err := LoadOrCreateToken(own); err != nil || created || got != testToken {
		t.Errorf("own token: %q %v %v", got, created, err)
	}
	for name, content := range map[string]string{"empty": "", "short": "abc\n", "spaces": "abc def ghi jkl mno pqr\n", "lines": testToken + "\n" + testToken} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		if got, _, err := LoadOrCreateToken(p); err == nil {
			t.Errorf("%s: token %q accepted", name, got)
		}
		if b, _ := os.ReadFile(p); string(b) != content {
			t.Errorf("%s: file changed", name)
		}
	}
	if _, _, err := LoadOrCreateToken(filepath.Join(own, "x")); err == nil {
		t.Error("a token under a file: no error")
	}
}

// Two starts at once: one writes the file, both use its token.
func TestLoadOrCreateTokenRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "http-token")
	const n = 8
	type result struct {
		tok     string
		created bool
		err     error
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			tok, created, err := LoadOrCreateToken(path)
			results <- result{tok, created, err}
		})
	}
	wg.Wait()
	close(results)
	file, _ := os.ReadFile(path)
	creators := 0
	for r := range results {
		if r.err != nil || r.tok+"\n" != string(file) {
			t.Errorf("got %q %v; the file holds %q", r.tok, r.err, file)
		}
		if r.created {
			creators++
		}
	}
	if creators != 1 {
		t.Errorf("%d callers created the file, want 1", creators)
	}
}
