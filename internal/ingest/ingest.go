// Package ingest is the device API: it routes CoAP requests, validates telemetry and hands each
// accepted record to the spool, answering 2.04 only once the spool says the record is durable.
//
// Resources:
//
//	POST|PUT /{type}/{id}      telemetry, a JSON object (Content-Format absent or 50), a CBOR map
//	                           (60) or a SenML pack (110 JSON, 112 CBOR); in local mode with
//	                           Accept: 50, the 2.04 carries the thing's delta
//	GET /{type}/{id}           local mode: the thing's delta; with Observe, notifications
//	GET /.well-known/core      RFC 6690 link format, filterable by rt= and href=
//	GET /health                2.05 JSON (CBOR to Accept 60): status, spool depth, lag, version
//
// The exchange layer (coapserver) has already answered every request with an option it does not
// accept (4.02, 5.05). The rest goes through the pipeline assembled in pipeline.go, in the order
// stated there: the router (router.go), then, for telemetry, validation, identity binding and the
// plain CoAP policy (binding.go), the middleware (draining, the per-device rate limit) and the
// spool append (telemetry.go).
//
// Identity. A DTLS request carries the session's PSK identity, "{type}/{thing}" (Request.Identity):
// it may write only that thing (else 4.03), and its rate limit is keyed on the identity, so a
// peer naming the device's URI over plain CoAP does not spend the device's budget. Plain CoAP is
// governed by PlainPolicy (--plain-coap): open, unbound (only things without a credential; a bound
// thing gets 4.01) or off.
//
// No response to an unverified address is more than three times the size of its request
// (amplification.go).
//
// Failed spool appends (full, disk errors, no file descriptor) are logged once per change of
// state, with a count when they succeed again, and Handler.StorageErr reports them for the
// gateway's /readyz (appendstate.go).
//
// Configuration (Config): besides the telemetry limits and --device-rate, Credentials (the store
// internal/credential builds from its config; nil without one) and PlainPolicy (--plain-coap,
// plain_coap: open, unbound or off; default unbound with Credentials, open without).
//
// Metrics: coapgw_ingest_records_total{result} (accepted, rejected, spool_full, spool_error,
// draining, queue_error, rate_limited, unauthorized: 4.01 or 4.03 from identity binding,
// thing_limit: 5.03 for a new thing beyond --max-things, type_conflict: 4.00 for a thing that
// exists with another type, shadow_limit and property_limit: 4.13 for a record its thing's
// shadow cannot take, thing_busy: 5.03 while that cannot be known yet),
// coapgw_ingest_echo_challenges_total, coapgw_ingest_get_writes_total (--compat seed only: GETs
// with a payload taken as telemetry), coapgw_ingest_things (things known, with --max-things or
// a Registry), coapgw_ingest_thing_models (things whose state is kept in memory, applicable.go;
// with a Registry), coapgw_ingest_rate_limit_devices and
// coapgw_ingest_rate_limit_untracked_total (with --device-rate only; limit.go).
//
// JSON (jsoncheck.go): besides RFC 8259, the shadow rules of internal/jsonscan (numbers within
// float64's range, no NUL, no unpaired surrogate, keys nonempty and unique in their object), 4.00
// with a diagnostic. A CBOR or SenML payload is checked as the JSON object it stands for
// (record.ToJSON), so the rules, the depth limit and the shadow budget are the same for every
// format; the record keeps the payload as sent, with its Content-Format.
//
// --max-things (Config.MaxThings; thinglimit.go): the gateway keeps the things it knows in memory
// (one map entry each, about 70 bytes with a short name), loaded at start and learnt as records of
// new things reach the spool; a new thing beyond the cap gets 5.03 with Max-Age and "thing limit
// reached" before anything is stored, and known things keep working. A thing deleted through
// the HTTP API is forgotten (Handler.ForgetThing) and stops counting.
//
// Downlink (Config.Deltas, local mode; downlink.go): a thing's pending desired-state change rides
// in the 2.04 to a report that asks for it with Accept: 50, within the amplification bound, and
// GET /{type}/{id} returns it, after identity binding; with Observe the device is notified of
// each change (NotifyThing, which the registry triggers; the exchange layer's observe.go). A GET
// refused by binding counts as unauthorized in coapgw_ingest_records_total.
//
// The 2018 CoAP-to-AWS-IoT ingestor's devices (Config.CompatSeed, --compat seed; compat.go): a
// GET with a payload is telemetry, as a POST, and answers carry the text RECEIVED OK or FAILURE.
// With --envelope seed (Config.JSONOnly) only JSON payloads are accepted (else 4.15).
//
// Local mode (Config.Registry; applicable.go): every known thing also has a type — a record
// naming it under another gets 4.00 "thing X exists with type Y" — and upper bounds of its
// reported state's size and properties, so that a record that would take it past 8 KB or
// --max-properties (Config.MaxProperties) gets 4.13 before it is stored. The gateway calls
// Handler.Processed after each batch the processor applied.
package ingest

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/credential"
	"github.com/coapgw/coapgw/internal/jsonscan"
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
	// tracked (--device-rate-devices, default 1,000,000, 53 MiB of heap: BenchmarkLimiterMemory).
	DeviceRate, DeviceBurst, DeviceLimitEntries int
	// Lag, if set, is reported by /health as lag_seconds: how far behind the stage after the
	// spool is (the forwarder to SQS, or the local processor).
	Lag func() time.Duration
	// AfterStored, if set, is called once a record is durable in the spool; the device gets its
	// answer only when done is called (--ack-after=queue: after SQS accepted it). It must not
	// block. An error from it, or passed to done, answers 5.03; logging those is up to its owner
	// (ingest only counts them: coapgw_ingest_records_total{result="queue_error"}).
	AfterStored func(seq uint64, done func(error)) error
	// Credentials, if set, says which things have a credential (binding.go); nil: none has.
	Credentials credential.Store
	// PlainPolicy is --plain-coap: PlainOpen, PlainUnbound or PlainOff. "" means PlainUnbound
	// with Credentials, PlainOpen without; PlainUnbound needs Credentials.
	PlainPolicy string
	// MaxThings is --max-things: once the gateway knows this many things, a record of a new one
	// gets 5.03 "thing limit reached" and is not stored (thinglimit.go). 0 = no cap. A name
	// counts from its first record handed to the spool.
	MaxThings int
	// Registry, if set (local mode), lists the things that exist at start, with their type, and
	// reads shadows: a record naming a thing under another type gets 4.00, one that would take
	// the thing's reported state past 8 KB or MaxProperties gets 4.13 (applicable.go).
	Registry Registry
	// MaxProperties is --max-properties: the most properties a thing's reported state may have
	// (with Registry; 0 = no cap).
	MaxProperties int
	// SeedShadow is --seed-shadow (with Registry): the processor adds online, uuid and type to
	// every thing's reported state, so the shadow budget counts them (applicable.go).
	SeedShadow bool
	// Deltas, if set (local mode), gives each thing's pending desired-state change, which the
	// 2.04 to a device that asks for it carries (downlink.go) and GET /{type}/{id} returns.
	Deltas Deltas
	// CompatSeed is --compat seed: a GET with a payload is telemetry, and the answers carry the
	// texts RECEIVED OK and FAILURE, as the 2018 CoAP-to-AWS-IoT ingestor's did (compat.go).
	CompatSeed bool
	// JSONOnly (--envelope seed) refuses payloads other than JSON with 4.15 (compat.go).
	JSONOnly bool
}

// Handler is the device API, a coapserver.Handler.
type Handler struct {
	cfg      Config
	spool    Spool
	log      *slog.Logger
	serve    coapserver.Handler // the pipeline (pipeline.go)
	draining atomic.Bool
	accepted atomic.Uint64
	bufs     sync.Pool // record encoding buffers
	waits    sync.Pool // *waiting (telemetry.go)
	keys     sync.Pool // *jsonscan.Keys, for the shadow rules' key checks (jsoncheck.go)
	results  [numResults]prometheus.Counter
	echoKey  [32]byte      // see amplification.go
	limit    *limiter      // nil: no --device-rate
	things   *thingIndex   // nil: no --max-things and no Registry
	shadows  *shadowBudget // nil: no Registry
	appends  appendState
	// notifiers send Observe notifications (downlink.go); set before serving
	notifiers []Notifier

	echoChallenges prometheus.Counter
	getWrites      prometheus.Counter // --compat seed: GETs with a payload taken as telemetry
}

var (
	_ coapserver.Handler        = (*Handler)(nil)
	_ coapserver.RejectObserver = (*Handler)(nil)
)

type result int

const (
	resAccepted result = iota
	resRejected
	resFull
	resError
	resDraining
	resQueue
	resLimited
	resUnauthorized
	resThingLimit
	resTypeConflict
	resShadowLimit
	resPropertyLimit
	resThingBusy
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
	if err := plainPolicy(&cfg); err != nil {
		return nil, err
	}
	if cfg.DeviceLimitEntries <= 0 {
		cfg.DeviceLimitEntries = 1_000_000
	}
	h := &Handler{cfg: cfg, spool: sp, log: log, echoKey: newEchoKey(),
		limit: newLimiter(cfg.DeviceRate, cfg.DeviceBurst, cfg.DeviceLimitEntries)}
	var err error
	if h.things, err = newThingIndex(cfg.MaxThings, cfg.Registry); err != nil {
		return nil, err
	}
	if h.shadows, err = newShadowBudget(cfg.Registry, cfg.MaxProperties, sp); err != nil {
		return nil, err
	}
	h.appends.log, h.appends.now = log, time.Now
	h.appends.quiet = time.Duration(cfg.RetryAfter) * time.Second
	h.echoChallenges = prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgw_ingest_echo_challenges_total",
		Help: "4.01 Unauthorized answers with an Echo option: an answer would have amplified a request from an unverified address."})
	h.bufs.New = func() any { b := make([]byte, 0, 512); return &b }
	h.waits.New = func() any { return h.newWaiting() }
	h.keys.New = func() any { return new(jsonscan.Keys) }
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coapgw_ingest_records_total", Help: "Telemetry requests by result."}, []string{"result"})
	for i, n := range []string{"accepted", "rejected", "spool_full", "spool_error", "draining", "queue_error", "rate_limited", "unauthorized", "thing_limit",
		"type_conflict", "shadow_limit", "property_limit", "thing_busy"} {
		h.results[i] = vec.WithLabelValues(n)
	}
	if reg != nil {
		reg.MustRegister(vec, h.echoChallenges)
		if h.limit != nil {
			reg.MustRegister(h.limit.collectors()...)
		}
		if h.things != nil {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "coapgw_ingest_things",
				Help: "Things the gateway knows, counted against --max-things."},
				func() float64 { return float64(h.things.n.Load()) }))
		}
		if h.shadows != nil {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "coapgw_ingest_thing_models",
				Help: "Things past half a shadow limit whose state the gateway keeps in memory to decide their records."},
				func() float64 { return float64(h.shadows.models.Load()) }))
		}
	}
	if cfg.CompatSeed {
		h.getWrites = prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgw_ingest_get_writes_total",
			Help: "GET requests with a payload taken as telemetry (--compat seed); 0 for a whole reporting cycle: no device needs the mode."})
		if reg != nil {
			reg.MustRegister(h.getWrites)
		}
	}
	h.serve = h.pipeline()
	return h, nil
}

// Accepted is how many records were stored and acknowledged since start.
func (h *Handler) Accepted() uint64 { return h.accepted.Load() }

// Drain makes every later telemetry request get 5.03 (used during shutdown).
func (h *Handler) Drain() { h.draining.Store(true) }

// ServeCoAP handles one request.
func (h *Handler) ServeCoAP(w *coapserver.ResponseWriter, r *coapserver.Request) {
	h.serve.ServeCoAP(w, r)
}

// Rejected counts a request the exchange layer refused for a bad critical option (4.02, or
// nothing for a NON) as a rejected one, like any other request the device API refuses.
func (h *Handler) Rejected(_ *coapserver.Request, code coapmsg.Code) {
	if code == coapmsg.BadOption {
		h.results[resRejected].Inc()
	}
}
