// Package gateway wires the components of one coapgw process together (CoAP server, device API,
// spool, the local processor or the forwarder, the operations HTTP server) and runs them as a
// run group (run.go): a component that dies makes the gateway not ready, answer 5.03 and exit
// with an error, and a stop shuts everything down in dependency order. /readyz also answers 503
// while spool appends fail (ingest.Handler.StorageErr), and while the stage after the spool (the
// forwarder to SQS, the local processor) is further behind than ready_max_lag, with why: failing
// (since when, how many calls, the last error) or too slow, and the spool's backlog (stage.go);
// devices keep getting 2.04 meanwhile, as long as the spool takes their records.
//
// Configuration: config.Config, role config.Serve; every section goes to its component. The
// gateway's own keys are shutdown_timeout (how long a stop waits for requests in flight),
// fail_linger (how long a failed gateway answers 5.03 and /readyz 503 before it exits) and
// ready_max_lag (default 1m; 0 turns the stage's part of /readyz off); emf_interval, emf_addr,
// emf_namespace and emf_log_group send the stage lag and the spool depth to CloudWatch as
// embedded metric format (emf.go). The local
// section's max_things goes to the device API; in local mode the device API also reads the
// registry (its things with their types, a thing's reported state: ingest.Registry)
// and is told how far the processor got after each batch, and max_properties goes to both
// (local.go). With --queue and iot-downlink-endpoint the device API's desired-state changes come
// from AWS IoT (internal/awsdownlink, awsdownlink.go), an actor stopped after the transports.
// Metrics:
// the components' own, plus the Go and process collectors.
package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgw/coapgw/internal/awsdownlink"
	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/config"
	"github.com/coapgw/coapgw/internal/credential"
	"github.com/coapgw/coapgw/internal/dtlsserver"
	"github.com/coapgw/coapgw/internal/httpapi"
	"github.com/coapgw/coapgw/internal/ingest"
	"github.com/coapgw/coapgw/internal/ops"
	"github.com/coapgw/coapgw/internal/spool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Version and Commit are set at build time with -ldflags "-X .../gateway.Version=... -X
// .../gateway.Commit=..." (make build, the Dockerfile); cmd/coapgw fills them from Go's build
// information otherwise. Both are reported by coapgw_build_info.
var (
	Version = "dev"
	Commit  = ""
)

// Gateway is one running coapgw process.
type Gateway struct {
	cfg    config.Config
	log    *slog.Logger
	reg    *prometheus.Registry
	spool  *spool.Disk
	ingest *ingest.Handler
	coap   *coapserver.Server // nil with --plain-coap off
	// transports are the servers devices reach (plain CoAP, DTLS), stopped together.
	transports []namedTransport
	// httpAccess is the HTTP API's access rules: its token and whether it listens off loopback.
	httpAccess httpapi.Config
	creds      credential.Store   // nil without a credential source
	dtls       *dtlsserver.Server // nil without a credential source
	ops        *ops.Server        // nil when --http-addr is empty
	ready      atomic.Bool
	// failure is the error of a component that died, once one did.
	failure atomic.Pointer[error]

	local   *local      // nil unless --process=local and no --queue
	forward *forwarding // nil unless --queue
	emf     *ops.EMF    // nil unless --emf-interval
	// awsDownlink is the desired-state changes from AWS IoT (nil unless --iot-downlink-endpoint).
	awsDownlink *awsdownlink.Downlink
	// queueAcks logs the runs of --ack-after queue waits that failed (stage.go).
	queueAcks *ops.FailureRun
	started   time.Time
	rate      rate
}

// New opens the spool and binds the sockets, so LocalAddr and HTTPAddr work before Serve.
func New(cfg config.Config, log *slog.Logger) (*Gateway, error) {
	if err := cfg.Validate(config.Serve); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	g.queueAcks = g.queueAckRun()
	g.reg.MustRegister(ops.BuildInfo(Version, Commit))
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sp, err := g.openSpool()
	if err != nil {
		return nil, err
	}
	if err := g.openHTTPAccess(); err != nil {
		sp.Close()
		return nil, err
	}
	switch {
	case cfg.AWS.Queue != "":
		if err := g.openForward(); err != nil {
			sp.Close()
			return nil, err
		}
	case cfg.Local.Process == "local":
		if err := g.openLocal(); err != nil {
			sp.Close()
			return nil, err
		}
	default: // --process none
		g.raiseSeqPastStoredRegistry()
	}
	fail := func(err error) (*Gateway, error) {
		g.closeTransports()
		if g.local != nil {
			g.local.close(g)
		}
		sp.Close()
		return nil, err
	}
	if g.creds, err = g.openCredentials(); err != nil {
		return fail(err)
	}
	policy := cfg.Credentials.PlainCoAP
	if policy == "" {
		policy = ingest.DefaultPlainPolicy(g.creds != nil)
	}
	g.ingest, err = ingest.New(ingest.Config{
		GatewayID: cfg.Ingest.GatewayID, MaxPayload: int(cfg.Ingest.MaxPayload),
		RetryAfter: int(cfg.Ingest.RetryAfter / time.Second), Version: Version,
		AfterStored: g.afterStored(), Lag: g.lag,
		DeviceRate: cfg.Ingest.DeviceRate, DeviceBurst: cfg.Ingest.DeviceBurst, DeviceLimitEntries: cfg.Ingest.DeviceRateDevices,
		Credentials: g.creds, PlainPolicy: policy,
		MaxThings: g.maxThings(), Registry: g.ingestRegistry(), MaxProperties: g.cfg.Local.MaxProperties,
		SeedShadow: g.cfg.Compat.SeedShadow,
		Deltas:     g.deltas(),
		CompatSeed: cfg.Compat.Device == "seed", JSONOnly: cfg.Compat.Envelope == "seed",
	}, sp, log.With("component", "ingest"), g.reg)
	if err != nil {
		return fail(err)
	}
	if g.local != nil {
		g.local.guard.processed = g.ingest.Processed
	}
	if policy != ingest.PlainOff {
		if err := g.openCoAP(); err != nil {
			return fail(err)
		}
		if w := ingest.PlainWarning(policy, g.CoAPAddr().String()); w != "" {
			log.Warn(w)
		}
	}
	if g.creds != nil {
		if err := g.openDTLS(); err != nil {
			return fail(err)
		}
	}
	if g.emf, err = g.openEMF(); err != nil {
		return fail(err)
	}
	if cfg.HTTP.Addr != "" {
		oc := g.opsConfig()
		if cfg.HTTP.MetricsAuth {
			oc.WrapMetrics = func(h http.Handler) http.Handler { return httpapi.RequireToken(g.httpAccess.Token, h) }
		}
		g.ops = ops.New(oc, g.reg, log.With("component", "http"))
		if g.local != nil {
			g.local.api.Register(g.ops.Mux()) // the dashboard at / and the JSON API under /api/
			g.ops.RegisterOnShutdown(g.local.api.Close)
		}
		if err := g.ops.Listen(); err != nil {
			return fail(err)
		}
	}
	return g, nil
}

// openSpool opens <data-dir>/spool as g.spool.
func (g *Gateway) openSpool() (*spool.Disk, error) {
	sp, err := spool.Open(filepath.Join(g.cfg.Spool.DataDir, "spool"), spool.Options{
		MaxBytes: int64(g.cfg.Spool.MaxBytes), SegmentBytes: int64(g.cfg.Spool.SegmentBytes),
		Logger: g.log.With("component", "spool"), Registerer: g.reg,
	})
	if err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	g.spool = sp
	return sp, nil
}

// lag is how far behind the stage after the spool is: the forwarder's, or the local processor's.
func (g *Gateway) lag() time.Duration {
	switch {
	case g.forward != nil:
		return g.forward.fwd.Stats().Lag
	case g.local != nil:
		return g.local.proc.Lag()
	}
	return 0
}

// errQueueTimeout answers 5.03 when SQS has not accepted a record within --queue-ack-timeout
// (an outage or throttling); the record stays in the spool and is forwarded later, so a device
// that retries may add a duplicate, which the processor's merge rules make harmless.
var errQueueTimeout = errors.New("queue did not accept the record in time")

// afterStored is ingest's hook for --ack-after=queue: the device's 2.04 waits until SQS accepted
// the record, for at most --queue-ack-timeout.
func (g *Gateway) afterStored() func(uint64, func(error)) error {
	if g.cfg.Forward.AckAfter != "queue" || g.forward == nil {
		return nil
	}
	return func(seq uint64, done func(error)) error {
		var once sync.Once
		finish := func(err error) { once.Do(func() { g.noteQueueAck(err); done(err) }) }
		timer := time.AfterFunc(g.cfg.Forward.QueueAckTimeout, func() { finish(errQueueTimeout) })
		if err := g.forward.fwd.OnAccepted(seq, func(err error) { timer.Stop(); finish(err) }); err != nil {
			if timer.Stop() {
				g.noteQueueAck(err)
				return err
			}
		}
		return nil
	}
}

// CoAPSAddr is the bound DTLS address, or the zero AddrPort without a credential source.
func (g *Gateway) CoAPSAddr() netip.AddrPort {
	if g.dtls == nil {
		return netip.AddrPort{}
	}
	return g.dtls.LocalAddr()
}

// CoAPAddr is the bound UDP address.
func (g *Gateway) CoAPAddr() netip.AddrPort {
	if g.coap == nil {
		return netip.AddrPort{}
	}
	return g.coap.LocalAddr()
}

// HTTPAddr is the bound HTTP address, or "" if disabled.
func (g *Gateway) HTTPAddr() string {
	if g.ops == nil {
		return ""
	}
	return g.ops.Addr()
}

// Registry is the gateway's Prometheus registry.
func (g *Gateway) Registry() *prometheus.Registry { return g.reg }

// errNotReady is /readyz's reason while the gateway starts or stops.
var errNotReady = errors.New("starting or shutting down")

// readiness is /readyz's check: starting or stopping, a component that died, spool appends
// failing (full, disk errors, no descriptors; ingest.Handler.StorageErr), or the stage after the
// spool further behind than --ready-max-lag (stageErr).
func (g *Gateway) readiness() error {
	if err := g.failure.Load(); err != nil {
		return *err
	}
	if !g.ready.Load() {
		return errNotReady
	}
	if err := g.ingest.StorageErr(); err != nil {
		return err
	}
	return g.stageErr()
}

// readyDetails are the fields of every /readyz answer.
func (g *Gateway) readyDetails() map[string]any {
	st := g.spool.Stats()
	return map[string]any{"spool_depth": st.Depth, "spool_bytes": st.Bytes}
}

// openHTTPAccess sets the HTTP API's access rules. Off loopback every API request needs the
// bearer token; writes need it everywhere. The token comes from --http-token-file, or is
// generated into <data-dir>/http-token (mode 0600) when the server is not on loopback or
// /metrics needs it, and its file is logged, never the token.
func (g *Gateway) openHTTPAccess() error {
	c := g.cfg.HTTP
	if c.Addr == "" {
		return nil
	}
	a := httpapi.Config{Public: !httpapi.IsLoopback(c.Addr)}
	for _, h := range strings.Split(c.AllowedHosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			a.AllowedHosts = append(a.AllowedHosts, h)
		}
	}
	path := c.TokenFile
	if path == "" && (a.Public || c.MetricsAuth) {
		path = filepath.Join(g.cfg.Spool.DataDir, "http-token")
	}
	if path != "" {
		tok, created, err := httpapi.LoadOrCreateToken(path)
		if err != nil {
			return fmt.Errorf("http token: %w", err)
		}
		a.Token = tok
		if created {
			g.log.Info("http api token generated", "file", path, "use", "Authorization: Bearer <the file's contents>, or paste it into the dashboard")
		} else if a.Public {
			g.log.Info("http api needs the token off loopback", "file", path)
		}
	}
	g.httpAccess = a
	return nil
}
