package httpapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// SessionCookie is the name of the cookie POST /api/login sets.
const SessionCookie = "coapgw_session"

// maxLoginBody bounds the body of POST /api/login.
const maxLoginBody = 4 << 10

// access is who may use the API: the token, whether the server listens beyond loopback, and
// the host names a loopback server answers to.
type access struct {
	token      string
	public     bool
	hosts      map[string]bool // normalized by hostOnly; localhost and loopback IPs are always in
	sessionTTL time.Duration
	now        func() time.Time
}

func newAccess(cfg Config) *access {
	ac := &access{token: cfg.Token, public: cfg.Public, hosts: map[string]bool{"localhost": true},
		sessionTTL: cfg.SessionTTL, now: cfg.Now}
	for _, h := range cfg.AllowedHosts {
		if h = hostOnly(h); h != "" {
			ac.hosts[h] = true
		}
	}
	return ac
}

// guard wraps a route of the API: on loopback the Host header must name this machine; then
// a request needs the token (as a bearer token or a session cookie) when it writes, or when
// the server is public.
func (ac *access) guard(write bool, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ac.hostOK(w, r) {
			return
		}
		if (write || ac.public) && !ac.authenticated(w, r) {
			return
		}
		h.ServeHTTP(w, r)
	})
}

// hostOK answers 403 and returns false when a loopback server gets a Host header that is not
// one of its names: a page of another site whose name was made to resolve to 127.0.0.1 (DNS
// rebinding) sends its own name.
func (ac *access) hostOK(w http.ResponseWriter, r *http.Request) bool {
	if ac.public {
		return true
	}
	h := hostOnly(r.Host)
	if ac.hosts[h] {
		return true
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
		return true
	}
	writeError(w, http.StatusForbidden, "host "+quote(r.Host)+" is not a name of this gateway; "+
		"add it to the allowed HTTP hosts (--http-allowed-hosts) if it is")
	return false
}

// authenticated reports whether r carries the token, and answers 401 (or 403 when there is no
// token to give) when it does not. An Authorization header, when present, decides alone; a
// session cookie counts only on requests of this origin.
func (ac *access) authenticated(w http.ResponseWriter, r *http.Request) bool {
	if ac.token == "" {
		writeError(w, http.StatusForbidden, "this needs the API token, and the gateway has none configured (--http-token-file)")
		return false
	}
	if v := r.Header.Get("Authorization"); v != "" {
		scheme, tok, _ := strings.Cut(v, " ")
		if strings.EqualFold(scheme, "Bearer") && tokenEqual(strings.TrimSpace(tok), ac.token) {
			return true
		}
		unauthorized(w, `error="invalid_token"`, "invalid token")
		return false
	}
	if c, err := r.Cookie(SessionCookie); err == nil {
		if ac.sessionValid(c.Value) && sameOrigin(r) {
			return true
		}
		unauthorized(w, `error="invalid_token"`, "the session expired or is not valid; log in again")
		return false
	}
	unauthorized(w, "", "this needs the API token: send Authorization: Bearer <token>, or log in on the dashboard")
	return false
}

func unauthorized(w http.ResponseWriter, params, msg string) {
	v := `Bearer realm="coapgw"`
	if params != "" {
		v += ", " + params
	}
	w.Header().Set("WWW-Authenticate", v)
	writeError(w, http.StatusUnauthorized, msg)
}

// tokenEqual compares in constant time, whatever the lengths.
func tokenEqual(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// sameOrigin reports whether a request that carries a cookie comes from a page of this server:
// browsers send Origin on every POST and on cross-origin requests; a request without it is not
// from another site's page.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// A session is "<expiry unix seconds>.<base64url HMAC-SHA256 of the expiry, keyed with the
// token>": it proves the token was given at login without being the token, expires, and ends
// for every browser when the token changes. Sessions need no state and survive restarts.
func (ac *access) session(exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	return e + "." + ac.sign(e)
}

func (ac *access) sign(exp string) string {
	m := hmac.New(sha256.New, []byte(ac.token))
	m.Write([]byte("coapgw session v1\x00" + exp))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (ac *access) sessionValid(v string) bool {
	e, sig, ok := strings.Cut(v, ".")
	if !ok || ac.token == "" {
		return false
	}
	exp, err := strconv.ParseInt(e, 10, 64)
	if err != nil || ac.now().Unix() >= exp {
		return false
	}
	return hmac.Equal([]byte(sig), []byte(ac.sign(e)))
}

type loginBody struct {
	Token string `json:"token"`
}

// handleLogin is POST /api/login {"token": "..."}: with the right token it sets the session
// cookie (HttpOnly, SameSite=Strict, no Max-Age: the browser forgets it when it closes) and
// answers 204. The dashboard calls it once, the first time the API answers 401.
func (ac *access) handleLogin(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed")
		return
	}
	if !ac.hostOK(w, r) {
		return
	}
	if !sameOrigin(r) {
		writeError(w, http.StatusForbidden, "login from another site's page")
		return
	}
	var body loginBody
	dec := json.NewDecoder(io.LimitReader(r.Body, maxLoginBody))
	if err := dec.Decode(&body); err != nil || body.Token == "" {
		writeError(w, http.StatusBadRequest, `the body must be {"token": "..."}`)
		return
	}
	if ac.token == "" {
		writeError(w, http.StatusForbidden, "the gateway has no API token configured (--http-token-file)")
		return
	}
	if !tokenEqual(body.Token, ac.token) {
		unauthorized(w, `error="invalid_token"`, "wrong token")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: ac.session(ac.now().Add(ac.sessionTTL)),
		Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// handleLogout is POST /api/logout: it removes the session cookie.
func (ac *access) handleLogout(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed")
		return
	}
	if !ac.hostOK(w, r) {
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	w.WriteHeader(http.StatusNoContent)
}

// RequireToken wraps h so that it answers only requests with "Authorization: Bearer <token>"
// (401 with WWW-Authenticate otherwise, and always when token is empty). The gateway puts it
// around /metrics when metrics need the token; a Prometheus scrape config gives the token with
// authorization.credentials_file.
func RequireToken(token string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if token == "" || !strings.EqualFold(scheme, "Bearer") || !tokenEqual(strings.TrimSpace(tok), token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="coapgw"`)
			writeError(w, http.StatusUnauthorized, "this needs the API token: send Authorization: Bearer <token>")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// IsLoopback reports whether a listen or bound address (host:port) accepts connections from
// this machine only: a loopback IP or "localhost". ":8080", "0.0.0.0:8080" and "[::]:8080" are
// not.
func IsLoopback(addr string) bool {
	h := hostOnly(addr)
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// hostOnly returns the host of "host", "host:port", "[v6]" or "[v6]:port", lower case, without
// a trailing dot.
func hostOnly(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}
