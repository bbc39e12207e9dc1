// Package ops is the operations side every coapgw role shares: one logger constructor (level and
// format → *slog.Logger) and one HTTP server for operators and load balancers, used by
// `coapgw serve`, `coapgw process` (and, for the logger, the Lambda handler).
//
// Endpoints:
//
//	GET /metrics        the role's Prometheus registry (with Go and process collectors)
//	GET /healthz        200 {"status":"ok"} while the process runs (liveness)
//	GET /readyz         200 {"status":"ready",...} when Config.Ready reports nil; else 503
//	                    {"status":"not ready","reason":...,...}: starting, stopping, a
//	                    component failed, or (the gateway) spool appends failing; both
//	                    with Config.Details' fields
//	/debug/pprof/       only with Config.Pprof (--pprof); keep the port private
//
// A role adds its own routes (the gateway's dashboard and JSON API) with Handle before Serve.
//
// Limits: a request's headers and body must arrive within the read timeout from its start
// (once the body is read the deadline is lifted, so a long response such as the dashboard's
// event stream runs on); a response may take the write timeout (the event stream extends it
// per event); a keep-alive connection idle for the idle timeout is closed. At most MaxConns
// connections are open at once (further ones wait in the kernel's listen backlog), and Listen
// lowers that cap so that the descriptors open at the time, one per connection and FDReserve
// fit under RLIMIT_NOFILE: no HTTP load, idle or slow, can take the descriptors the spool
// needs to append.
//
// Config keys (internal/config; HTTPConfig takes them): http_addr (--http-addr, empty disables
// the server), pprof, http_read_timeout, http_write_timeout, http_idle_timeout, http_max_conns
// (serve and process alike), log_level, log_format. Metrics: coapgw_http_connections (open
// now), coapgw_http_max_connections (the cap in force); each role also registers
// coapgw_build_info{version,commit,goversion} = 1 ([BuildInfo]).
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/coapgw/coapgw/internal/config"
)

// NewLogger returns a logger writing to w at level (debug, info, warn or error; any case) in
// format text or json.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToLower(level))); err != nil {
		return nil, fmt.Errorf("log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log-format %q: want text or json", format)
}

// Config configures a Server.
type Config struct {
	Addr  string // TCP listen address, e.g. ":8080"
	Pprof bool   // serve /debug/pprof/
	// Ready reports nil when the role is ready to take work, else why not. Nil: ready while
	// serving.
	Ready func() error
	// Details, if set, adds fields to the answers of /readyz (ready or not).
	Details func() map[string]any
	// WrapMetrics, if set, wraps the /metrics handler (e.g. to require a token).
	WrapMetrics func(http.Handler) http.Handler
	// Limits; zero means the default (30s, 60s, 60s, 256 connections).
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	IdleTimeout  time.Duration
	MaxConns     int
}

// HTTPConfig is a role's server address, pprof switch and limits as its http_* keys set them;
// the role adds Ready and Details.
func HTTPConfig(h config.HTTP) Config {
	return Config{
		Addr: h.Addr, Pprof: h.Pprof,
		ReadTimeout: h.ReadTimeout, WriteTimeout: h.WriteTimeout, IdleTimeout: h.IdleTimeout,
		MaxConns: h.MaxConns,
	}
}

func (c *Config) setDefaults() {
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 60 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 256
	}
}

// Server is the operations HTTP server.
type Server struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
	srv *http.Server
	ln  net.Listener
	lim *limitListener
	max prometheus.Gauge // the connection cap in force
}

// New builds the server and its routes on reg; it does no I/O.
func New(cfg Config, reg *prometheus.Registry, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.setDefaults()
	s := &Server{cfg: cfg, log: log, mux: http.NewServeMux()}
	var metrics http.Handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	if cfg.WrapMetrics != nil {
		metrics = cfg.WrapMetrics(metrics)
	}
	s.mux.Handle("GET /metrics", metrics)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	if cfg.Pprof {
		s.mux.HandleFunc("/debug/pprof/", pprof.Index)
		s.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: cfg.ReadTimeout,
		ReadTimeout:       cfg.ReadTimeout, // lifted once the body is read: a long response runs on
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
	}
	s.max = prometheus.NewGauge(prometheus.GaugeOpts{Name: "coapgw_http_max_connections", Help: "Cap on open HTTP connections in force (--http-max-conns, lowered to fit RLIMIT_NOFILE)."})
	reg.MustRegister(s.max, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "coapgw_http_connections", Help: "HTTP connections open now."}, func() float64 {
		if s.lim == nil {
			return 0
		}
		return float64(s.lim.open())
	}))
	return s
}

// Handle registers a role's own route (see http.ServeMux); call it before Serve.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Mux is the server's router, for packages that register several routes at once.
func (s *Server) Mux() *http.ServeMux { return s.mux }

// RegisterOnShutdown runs f when Shutdown begins (e.g. to end streaming responses).
func (s *Server) RegisterOnShutdown(f func()) { s.srv.RegisterOnShutdown(f) }

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	body := map[string]any{}
	if s.cfg.Details != nil {
		body = s.cfg.Details()
	}
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			body["status"], body["reason"] = "not ready", err.Error()
			writeJSON(w, http.StatusServiceUnavailable, body)
			return
		}
	}
	body["status"] = "ready"
	writeJSON(w, http.StatusOK, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	b, _ := json.Marshal(v)
	w.Write(append(b, '\n'))
}

// Listen binds the address, so Addr works before Serve.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen http %s: %w", s.cfg.Addr, err)
	}
	n := connLimit(s.cfg.MaxConns, fdLimit(), openFDs(), FDReserve)
	if n < s.cfg.MaxConns {
		s.log.Warn("http connections capped below --http-max-conns to keep descriptors for the spool", "max_conns", n, "rlimit_nofile", fdLimit(), "reserve", FDReserve)
	}
	s.max.Set(float64(n))
	s.lim = newLimitListener(ln, n)
	s.ln = s.lim
	return nil
}

// Addr is the bound address ("" before Listen).
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Serve answers requests until Shutdown; it returns nil after Shutdown.
func (s *Server) Serve() error {
	if s.ln == nil {
		return errors.New("ops: Serve before Listen")
	}
	s.log.Info("serving operations endpoints", "addr", s.Addr())
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}

// Shutdown stops accepting, lets requests in progress finish until ctx ends, and closes.
// Without Serve it closes the listener. Idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if s.ln != nil {
		s.ln.Close()
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return s.srv.Close()
	}
	return err
}
