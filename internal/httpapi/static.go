package httpapi

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"regexp"
	"strings"
	"sync"
	"time"
)

//go:embed web
var webFS embed.FS

// contentTypes lists the types of the files the dashboard ships; anything else is served as
// application/octet-stream.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".json": "application/json",
	".md":   "text/plain; charset=utf-8",
	"":      "text/plain; charset=utf-8", // LICENSE
}

// csp allows only the dashboard's own files; uPlot sets inline styles.
const csp = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// staticFile is one embedded file, ready to serve.
type staticFile struct {
	body        []byte
	gz          []byte // nil when not worth compressing
	contentType string
	hash        string // first 16 hex digits of SHA-256 of body
}

// staticFiles serves the dashboard. index.html references the other files as static/x?v=<hash>,
// which are cached for a year; every file also answers If-None-Match with 304.
type staticFiles struct {
	files map[string]*staticFile // by path under web/
	index *staticFile
}

var (
	staticOnce sync.Once
	staticSet  *staticFiles
)

// mustStatic loads the embedded files once per process; a failure is a build defect.
func mustStatic() *staticFiles {
	staticOnce.Do(func() {
		s, err := loadStatic(webFS)
		if err != nil {
			panic("httpapi: embedded dashboard: " + err.Error())
		}
		staticSet = s
	})
	return staticSet
}

var staticRef = regexp.MustCompile(`static/([A-Za-z0-9_./-]+)"`)

func loadStatic(fsys fs.FS) (*staticFiles, error) {
	root, err := fs.Sub(fsys, "web")
	if err != nil {
		return nil, err
	}
	s := &staticFiles{files: map[string]*staticFile{}}
	err = fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		s.files[p] = newStaticFile(p, body)
		return nil
	})
	if err != nil {
		return nil, err
	}
	idx, ok := s.files["index.html"]
	if !ok {
		return nil, fs.ErrNotExist
	}
	delete(s.files, "index.html")
	var missing error
	body := staticRef.ReplaceAllFunc(idx.body, func(m []byte) []byte {
		name := string(m[len("static/") : len(m)-1])
		f, ok := s.files[name]
		if !ok {
			missing = &fs.PathError{Op: "reference", Path: name, Err: fs.ErrNotExist}
			return m
		}
		return []byte("static/" + name + "?v=" + f.hash + `"`)
	})
	if missing != nil {
		return nil, missing
	}
	s.index = newStaticFile("index.html", body)
	return s, nil
}

func newStaticFile(name string, body []byte) *staticFile {
	sum := sha256.Sum256(body)
	f := &staticFile{body: body, hash: hex.EncodeToString(sum[:8])}
	ext := path.Ext(name)
	ct, ok := contentTypes[ext]
	if !ok {
		ct = "application/octet-stream"
	}
	f.contentType = ct
	if len(body) >= 1024 && ext != ".png" {
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		_, _ = zw.Write(body)
		_ = zw.Close()
		if b.Len() < len(body)*9/10 {
			f.gz = b.Bytes()
		}
	}
	return f
}

func (s *staticFiles) serveIndex(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	s.index.serve(w, r)
}

func (s *staticFiles) serveFile(w http.ResponseWriter, r *http.Request) {
	f, ok := s.files[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if v := r.URL.Query().Get("v"); v != "" && v == f.hash {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	f.serve(w, r)
}

func (f *staticFile) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	body, etag := f.body, `"`+f.hash+`"`
	if f.gz != nil {
		h.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r) {
			body, etag = f.gz, `"`+f.hash+`-gz"`
			h.Set("Content-Encoding", "gzip")
		}
	}
	h.Set("ETag", etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// acceptsGzip reports whether the request's Accept-Encoding lists gzip without q=0.
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				q := strings.ReplaceAll(params, " ", "")
				return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
			}
		}
	}
	return false
}
