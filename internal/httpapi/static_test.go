package httpapi

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestDashboardIndex(t *testing.T) {
	f := newFixture(t, Config{})
	r := f.get(t, "/")
	if r.code != 200 || r.header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /: %d %q", r.code, r.header.Get("Content-Type"))
	}
	if r.header.Get("Cache-Control") != "no-cache" || r.header.Get("ETag") == "" {
		t.Errorf("caching headers %v", r.header)
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	if r := f.get(t, "/index.html"); r.code != 404 {
		t.Errorf("/index.html: %d", r.code)
	}

	// Every file the page references exists, is versioned, has its type and may be cached.
	refs := regexp.MustCompile(`(?:href|src)="(static/[^"]+)"`).FindAllStringSubmatch(string(r.body), -1)
	if len(refs) < 4 {
		t.Fatalf("index references %d files: %s", len(refs), r.body)
	}
	want := map[string]string{
		".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
	}
	for _, m := range refs {
		ref := m[1]
		if !strings.Contains(ref, "?v=") {
			t.Errorf("%s is not versioned", ref)
			continue
		}
		fr := f.get(t, "/"+ref)
		ext := ref[strings.LastIndex(ref, "."):strings.Index(ref, "?")]
		if fr.code != 200 || fr.header.Get("Content-Type") != want[ext] {
			t.Errorf("%s: %d %q", ref, fr.code, fr.header.Get("Content-Type"))
		}
		if cc := fr.header.Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
			t.Errorf("%s: Cache-Control %q", ref, cc)
		}
		if fr.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", ref)
		}
	}
}

func TestStaticFiles(t *testing.T) {
	f := newFixture(t, Config{})
	r := f.get(t, "/static/app.js")
	if r.code != 200 || r.header.Get("Cache-Control") != "no-cache" || !bytes.Contains(r.body, []byte("EventSource")) {
		t.Fatalf("app.js: %d %v", r.code, r.header)
	}
	if r := f.get(t, "/static/app.js?v=stale"); r.header.Get("Cache-Control") != "no-cache" {
		t.Errorf("a stale version is cached: %q", r.header.Get("Cache-Control"))
	}

	// Revalidation.
	req := httptest.NewRequest("GET", "/static/app.js", nil)
	req.Header.Set("If-None-Match", r.header.Get("ETag"))
	rec := httptest.NewRecorder()
	f.mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
		t.Errorf("If-None-Match: %d", rec.Code)
	}

	// Compression, for clients that ask.
	req = httptest.NewRequest("GET", "/static/vendor/uPlot.iife.min.js", nil)
	req.Header.Set("Accept-Encoding", "br, gzip")
	rec = httptest.NewRecorder()
	f.mux.ServeHTTP(rec, req)
	if rec.Header().Get("Content-Encoding") != "gzip" || rec.Header().Get("Vary") != "Accept-Encoding" {
		t.Fatalf("gzip: %v", rec.Header())
	}
	zr, err := gzip.NewReader(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	raw := f.get(t, "/static/vendor/uPlot.iife.min.js")
	if raw.header.Get("Content-Encoding") != "" || !bytes.Equal(plain, raw.body) || len(raw.body) < 40000 {
		t.Fatalf("gzip body differs (%d vs %d bytes)", len(plain), len(raw.body))
	}
	if rec.Header().Get("ETag") == raw.header.Get("ETag") {
		t.Error("the gzip and identity bodies share an ETag")
	}

	if r := f.get(t, "/static/vendor/LICENSE"); r.code != 200 || r.header.Get("Content-Type") != "text/plain; charset=utf-8" ||
		!bytes.Contains(r.body, []byte("MIT")) {
		t.Errorf("LICENSE: %d %q", r.code, r.header.Get("Content-Type"))
	}
	for _, target := range []string{"/static/nope.js", "/static/", "/static/vendor", "/static/vendor/", "/nope"} {
		if r := f.get(t, target); r.code != 404 {
			t.Errorf("GET %s: %d", target, r.code)
		}
	}
	if r := f.do(t, "POST", "/"); r.code != 405 {
		t.Errorf("POST /: %d", r.code)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for v, want := range map[string]bool{
		"gzip": true, "gzip, deflate, br": true, "br;q=1.0, gzip;q=0.8": true, "GZIP": true,
		"": false, "br": false, "gzip;q=0": false, "identity": false, "x-gzip2": false,
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Accept-Encoding", v)
		if got := acceptsGzip(r); got != want {
			t.Errorf("acceptsGzip(%q) = %v", v, got)
		}
	}
}
