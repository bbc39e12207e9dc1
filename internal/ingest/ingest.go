// Package ingest is the device API: it routes CoAP requests, validates telemetry and hands each
// accepted record to the spool, answering 2.04 only once the spool says the record is durable.
//
// Resources:
//
//	POST|PUT /{type}/{id}      telemetry, a JSON object (Content-Format absent or 50)
//	GET /.well-known/core      RFC 6690 link format, filterable by rt= and href=
//	GET /health                2.05 JSON: status, spool depth, lag, version
//
// No response to an unverified address is more than three times the size of its request
// (amplification.go).
//
// Metrics: coapgw_ingest_records_total{result} (accepted, rejected, spool_full, spool_error,
// draining, queue_error, rate_limited), coapgw_ingest_echo_challenges_total.
package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
	"github.com/prometheus/client_golang/prometheus"
)

// Spool is what ingest needs from the durable inbox.
type Spool interface {
	Append(data []byte, done func(seq uint64, err error)) error
	Stats() spool.Stats
}

// Config configures the device API.
type Config struct {
	GatewayID  string // written into every record
	MaxPayload int    // bytes; larger payloads get 4.13 (default 8192)
	MaxDepth   int    // JSON nesting limit (default 6)
	RetryAfter int    // Max-Age in seconds on 5.03 (default 5)
	Version    string // reported by /health
	// DeviceRate limits each device (type/id) to this many records a minute, with bursts of
	// DeviceBurst (default 10); beyond it a CON gets 5.03 with Max-Age (seconds until the device
	// may send again) and a NON is dropped. 0 = no limit. DeviceLimitEntries bounds the devices
	// tracked (default 1,000,000, about 40 MB).
	DeviceRate, DeviceBurst, DeviceLimitEntries int
	// Lag, if set, is reported by /health as lag_seconds: how far behind the stage after the
	// spool is (the forwarder to SQS, or the local processor).
	Lag func() time.Duration
	// AfterStored, if set, is called once a record is durable in the spool; the device gets its
	// answer only when done is called (--ack-after=queue: after SQS accepted it). It must not
	// block. An error from it, or passed to done, answers 5.03.
	AfterStored func(seq uint64, done func(error)) error
}

// Handler implements coapserver.Handler.
type Handler struct {
	cfg      Config
	spool    Spool
	log      *slog.Logger
	draining atomic.Bool
	accepted atomic.Uint64
	bufs     sync.Pool
	results  [numResults]prometheus.Counter
	echoKey  [32]byte // see amplification.go
	limit    *limiter // nil: no --device-rate

	echoChallenges prometheus.Counter
}

var _ coapserver.Handler = (*Handler)(nil)

type result int

const (
	resAccepted result = iota
	resRejected
	resFull
	resError
	resDraining
	resQueue
	resLimited
	numResults
)

// New builds the handler; reg may be nil.
func New(cfg Config, sp Spool, log *slog.Logger, reg prometheus.Registerer) (*Handler, error) {
	if sp == nil {
		return nil, errors.New("ingest: nil spool")
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = 8192
	}
	if cfg.MaxDepth <= 0 {
		cfg.MaxDepth = 6
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 5
	}
	if len(cfg.GatewayID) > 255 {
		return nil, errors.New("ingest: gateway id longer than 255 bytes")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.DeviceBurst <= 0 {
		cfg.DeviceBurst = 10
	}
	if cfg.DeviceLimitEntries <= 0 {
		cfg.DeviceLimitEntries = 1_000_000
	}
	h := &Handler{cfg: cfg, spool: sp, log: log, echoKey: newEchoKey(),
		limit: newLimiter(cfg.DeviceRate, cfg.DeviceBurst, cfg.DeviceLimitEntries)}
	h.echoChallenges = prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgw_ingest_echo_challenges_total",
		Help: "4.01 Unauthorized answers with an Echo option: an answer would have amplified a request from an unverified address."})
	h.bufs.New = func() any { b := make([]byte, 0, 512); return &b }
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coapgw_ingest_records_total", Help: "Telemetry requests by result."}, []string{"result"})
	for i, n := range []string{"accepted", "rejected", "spool_full", "spool_error", "draining", "queue_error", "rate_limited"} {
		h.results[i] = vec.WithLabelValues(n)
	}
	if reg != nil {
		reg.MustRegister(vec, h.echoChallenges)
	}
	return h, nil
}

// Accepted is how many records were stored and acknowledged since start.
func (h *Handler) Accepted() uint64 { return h.accepted.Load() }

// Drain makes every later telemetry request get 5.03 (used during shutdown).
func (h *Handler) Drain() { h.draining.Store(true) }

const maxSegments = 8

// ServeCoAP handles one request.
func (h *Handler) ServeCoAP(w *coapserver.ResponseWriter, r *coapserver.Request) {
	m := r.Msg
	var segs [maxSegments][]byte
	nseg, tooMany := 0, false
	var queries [4][]byte
	nq := 0
	cf, cfSeen := uint32(record.NoContentFormat), false
	accept, acceptSeen := uint32(0), false
	var hostSeen, portSeen bool
	var echo []byte
	for _, o := range m.Options {
		switch o.Number {
		case coapmsg.URIPath:
			if nseg == maxSegments {
				tooMany = true
				continue
			}
			segs[nseg] = o.Value
			nseg++
		case coapmsg.URIHost:
			if hostSeen || len(o.Value) == 0 || len(o.Value) > 255 {
				h.badOption(w, o.Number)
				return
			}
			hostSeen = true
		case coapmsg.URIPort:
			if portSeen || len(o.Value) > 2 {
				h.badOption(w, o.Number)
				return
			}
			portSeen = true
		case coapmsg.URIQuery:
			if nq < len(queries) {
				queries[nq] = o.Value
				nq++
			}
		case coapmsg.ContentFormat:
			// A repeated or over-long elective option is ignored (RFC 7252 §5.4.5).
			if v, ok := coapmsg.Uint(o.Value); ok && len(o.Value) <= 2 && !cfSeen {
				cf, cfSeen = v, true
			}
		case coapmsg.Accept:
			v, ok := coapmsg.Uint(o.Value)
			if acceptSeen || !ok || len(o.Value) > 2 {
				h.badOption(w, o.Number)
				return
			}
			accept, acceptSeen = v, true
		case coapmsg.Echo:
			echo = o.Value
		case coapmsg.ProxyURI, coapmsg.ProxyScheme:
			w.Respond(coapmsg.ProxyingNotSupported, nil)
			return
		default:
			if coapmsg.Critical(o.Number) {
				h.badOption(w, o.Number)
				return
			}
		}
	}
	get := m.Code == coapmsg.GET
	switch {
	case !tooMany && nseg == 2 && string(segs[0]) == ".well-known" && string(segs[1]) == "core":
		if !get {
			w.Respond(coapmsg.MethodNotAllowed, nil)
			return
		}
		if acceptSeen && accept != uint32(coapmsg.FormatLinkFormat) {
			w.Respond(coapmsg.NotAcceptable, nil)
			return
		}
		h.wellKnown(w, queries[:nq], echo, r.Received)
		return
	case !tooMany && nseg == 1 && string(segs[0]) == "health":
		if !get {
			w.Respond(coapmsg.MethodNotAllowed, nil)
			return
		}
		if acceptSeen && accept != uint32(coapmsg.FormatJSON) {
			w.Respond(coapmsg.NotAcceptable, nil)
			return
		}
		h.health(w, echo, r.Received)
		return
	}
	if m.Code != coapmsg.POST && m.Code != coapmsg.PUT {
		if !tooMany && nseg == 2 && validName(segs[0]) && validName(segs[1]) {
			w.Respond(coapmsg.MethodNotAllowed, nil)
		} else {
			w.Respond(coapmsg.NotFound, nil)
		}
		return
	}
	if tooMany || nseg != 2 {
		h.reject(w, coapmsg.BadRequest, "path must be /{type}/{id}")
		return
	}
	if !validName(segs[0]) {
		h.reject(w, coapmsg.BadRequest, "type must match [a-zA-Z0-9:_-]{1,128}")
		return
	}
	if !validName(segs[1]) {
		h.reject(w, coapmsg.BadRequest, "id must match [a-zA-Z0-9:_-]{1,128}")
		return
	}
	if cf != record.NoContentFormat && cf != uint32(coapmsg.FormatJSON) {
		h.reject(w, coapmsg.UnsupportedFormat, "content-format must be 50 (JSON)")
		return
	}
	if len(m.Payload) > h.cfg.MaxPayload {
		w.SetUintOption(coapmsg.Size1, uint32(h.cfg.MaxPayload))
		h.reject(w, coapmsg.RequestEntityTooLarge, "payload too large")
		return
	}
	if len(m.Payload) == 0 {
		h.reject(w, coapmsg.BadRequest, "empty payload: want a JSON object")
		return
	}
	if err := checkJSONObject(m.Payload, h.cfg.MaxDepth); err != nil {
		msg := err.Error()
		if len(msg) > 64 {
			msg = msg[:64]
		}
		h.reject(w, coapmsg.BadRequest, msg)
		return
	}
	if h.draining.Load() {
		h.results[resDraining].Inc()
		h.unavailable(w, "gateway shutting down")
		return
	}
	if h.limit != nil {
		if ok, wait := h.limit.allow(segs[0], segs[1], r.Received.UnixNano()); !ok {
			h.limited(w, wait)
			return
		}
	}
	bp := h.bufs.Get().(*[]byte)
	b := record.AppendHeader((*bp)[:0], r.Received.UnixNano(), uint16(cf), h.cfg.GatewayID)
	b = record.AppendField(b, segs[0])
	b = record.AppendField(b, segs[1])
	b = record.AppendPeer(b, r.Peer)
	b = record.AppendPayload(b, m.Payload)
	w.Defer()
	err := h.spool.Append(b, func(seq uint64, err error) {
		if err != nil || h.cfg.AfterStored == nil {
			h.done(w, err)
			return
		}
		if err := h.cfg.AfterStored(seq, func(err error) { h.done(w, err) }); err != nil {
			h.done(w, err)
		}
	})
	*bp = b[:0]
	h.bufs.Put(bp)
	if err != nil {
		h.done(w, err)
	}
}

func (h *Handler) done(w *coapserver.ResponseWriter, err error) {
	if err == nil {
		h.accepted.Add(1)
		h.results[resAccepted].Inc()
		w.Respond(coapmsg.Changed, nil)
		return
	}
	var diag string
	if errors.Is(err, spool.ErrFull) {
		h.results[resFull].Inc()
		diag = "spool full"
	} else if h.cfg.AfterStored != nil && !errors.Is(err, spool.ErrUnavailable) && !errors.Is(err, spool.ErrClosed) {
		h.results[resQueue].Inc()
		h.log.Warn("queue did not accept a stored record", "err", err)
		diag = "queue unavailable"
	} else {
		h.results[resError].Inc()
		h.log.Warn("spool append failed", "err", err)
		diag = "storage unavailable"
	}
	h.unavailable(w, diag)
}

// unavailable answers 5.03 with Max-Age (--retry-after) and a short diagnostic: nothing was
// stored, the device should send again later.
func (h *Handler) unavailable(w *coapserver.ResponseWriter, diag string) {
	w.SetUintOption(coapmsg.MaxAge, uint32(h.cfg.RetryAfter))
	w.Respond(coapmsg.ServiceUnavailable, diagnostic(w, []byte(diag)))
}

// limited answers a device over its --device-rate: 5.03 with Max-Age, the whole seconds until it
// may send again, for a CON; nothing for a NON.
func (h *Handler) limited(w *coapserver.ResponseWriter, wait time.Duration) {
	h.results[resLimited].Inc()
	if !w.Confirmable() {
		w.Drop()
		return
	}
	w.SetUintOption(coapmsg.MaxAge, uint32(max(1, (wait+time.Second-1)/time.Second)))
	w.Respond(coapmsg.ServiceUnavailable, diagnostic(w, []byte("device over its rate limit")))
}

func (h *Handler) reject(w *coapserver.ResponseWriter, code coapmsg.Code, diag string) {
	h.results[resRejected].Inc()
	w.Respond(code, diagnostic(w, []byte(diag)))
}

// badOption answers a request with an unrecognised critical option (or a critical one of illegal
// length, or repeated): 4.02 for a CON; a NON is rejected, i.e. silently ignored (RFC 7252
// §5.4.1, §4.3).
func (h *Handler) badOption(w *coapserver.ResponseWriter, num uint16) {
	h.results[resRejected].Inc()
	if !w.Confirmable() {
		w.Drop()
		return
	}
	var b [40]byte
	w.Respond(coapmsg.BadOption, diagnostic(w, strconv.AppendUint(append(b[:0], "unsupported critical option "...), uint64(num), 10)))
}

func (h *Handler) health(w *coapserver.ResponseWriter, echo []byte, now time.Time) {
	st := h.spool.Stats()
	status := "ok"
	if h.draining.Load() {
		status = "draining"
	}
	var lag time.Duration
	if h.cfg.Lag != nil {
		lag = h.cfg.Lag()
	}
	body := fmt.Sprintf(`{"status":%q,"spool_depth":%d,"lag_seconds":%.3f,"version":%q}`, status, st.Depth, lag.Seconds(), h.cfg.Version)
	if !h.verified(w, echo, now, len(body), coapmsg.FormatJSON) {
		return
	}
	w.SetUintOption(coapmsg.ContentFormat, uint32(coapmsg.FormatJSON))
	w.Respond(coapmsg.Content, []byte(body))
}

// validName reports whether b is a valid AWS IoT thing or thing type name.
func validName(b []byte) bool {
	if len(b) == 0 || len(b) > 128 {
		return false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == ':' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
