package gateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/coapgw/coapgw/internal/httpapi"
	"github.com/coapgw/coapgw/internal/ingest"
	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/registry"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// local is local mode's half of the pipeline: the processor applies spool records to the embedded
// registry, and the HTTP API and dashboard read it.
type local struct {
	reg   *registry.Registry
	guard *storeGuard
	proc  *processor.Processor
	api   *httpapi.API
}

func (g *Gateway) openLocal() error {
	histMax := int64(g.cfg.Local.HistoryMaxBytes)
	if histMax == 0 {
		histMax = -1 // no cap
	}
	var proc *processor.Processor // set below, before anything can retry a record
	reg, err := registry.Open(filepath.Join(g.cfg.Spool.DataDir, "registry.db"), registry.Options{
		HistoryMaxAge: g.cfg.Local.HistoryMaxAge, HistoryMaxPoints: g.cfg.Local.HistoryMaxPoints,
		HistoryMaxBytes: histMax, MaxSetAside: g.cfg.Local.MaxSetAside, MaxProperties: g.cfg.Local.MaxProperties,
		Logger: g.log.With("component", "registry"), Registerer: g.reg,
		// Observe: a thing's delta changed; the device API notifies its observers. g.ingest is
		// set before anything can change a delta (the HTTP API and the processor start later).
		OnDelta: func(name string) { g.ingest.NotifyThing(name) },
		// A retried set-aside record is decoded as the processor decodes records now.
		Batch: func(in []processor.Input) *processor.Batch { return proc.Batch(in) },
	})
	if err != nil {
		return fmt.Errorf("open registry: %w", err)
	}
	if err := g.raiseSeqPastRegistry(reg); err != nil {
		reg.Close()
		return err
	}
	l := &local{reg: reg, guard: &storeGuard{sink: reg}}
	apiCfg := g.httpAccess
	// A deleted thing stops counting against --max-things and may come back with another type.
	// g.ingest is set before the HTTP API serves.
	apiCfg.OnDelete = func(name string) { g.ingest.ForgetThing(name) }
	// A retried record may create a thing or change its state behind the device API's back.
	apiCfg.OnRetried = func(things []registry.NamedThing) {
		for _, t := range things {
			g.ingest.ThingChanged(t.Name, t.Type)
		}
	}
	l.api = httpapi.New(apiCfg, reg, g.status, g.log.With("component", "httpapi"))
	l.proc, err = processor.New(processor.Config{
		BatchSize: g.cfg.Local.Batch, BackoffMin: g.cfg.Local.BackoffMin, BackoffMax: g.cfg.Local.BackoffMax,
		OnApplied:  func(things []string) { l.api.Notify(things...) },
		SeedShadow: g.cfg.Compat.SeedShadow,
	}, l.guard, g.log.With("component", "processor"), g.reg)
	if err != nil {
		reg.Close()
		return err
	}
	proc = l.proc
	g.local = l
	return nil
}

// maxThings is --max-things for the device API: local mode only. With --queue the gateway cannot
// see AWS IoT's registry, and with --process none it has none; there is no cap then.
func (g *Gateway) maxThings() int {
	if g.local == nil {
		return 0
	}
	return g.cfg.Local.MaxThings
}

// ingestRegistry is the registry as the device API reads it (local mode; nil otherwise): the
// things with their types, a thing's reported state, how far the processor got.
func (g *Gateway) ingestRegistry() ingest.Registry {
	if g.local == nil {
		return nil
	}
	return ingestRegistry{reg: g.local.reg, gw: g.cfg.Ingest.GatewayID}
}

// deltas is the desired-state changes for the device API: the registry's (local mode), the
// shadows' in AWS IoT (--queue with --iot-downlink-endpoint), nil otherwise.
func (g *Gateway) deltas() ingest.Deltas {
	switch {
	case g.local != nil:
		return g.local.reg
	case g.awsDownlink != nil:
		return g.awsDownlink
	}
	return nil
}

type ingestRegistry struct {
	reg *registry.Registry
	gw  string
}

func (r ingestRegistry) Things() ([]ingest.KnownThing, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	things, err := r.reg.KnownThings(ctx)
	out := make([]ingest.KnownThing, len(things))
	for i, t := range things {
		out[i] = ingest.KnownThing{Name: t.Name, Type: t.Type}
	}
	return out, err
}

func (r ingestRegistry) State(ctx context.Context, thing string) (*processor.Doc, error) {
	return r.reg.ReportedState(ctx, thing)
}

func (r ingestRegistry) Processed() (uint64, error) { return r.reg.HighWater(r.gw) }

// raiseSeqPastRegistry makes the spool hand out sequence numbers above the registry's high-water
// mark for this gateway. They normally are (the mark comes from the spool); they are not when the
// spool directory was deleted or replaced and the registry kept, and the registry would then
// count every new record as a duplicate and drop it after its 2.04.
func (g *Gateway) raiseSeqPastRegistry(reg *registry.Registry) error {
	mark, err := reg.HighWater(g.cfg.Ingest.GatewayID)
	if err != nil {
		return fmt.Errorf("registry high-water mark: %w", err)
	}
	next := g.spool.Stats().NextSeq
	raised, err := g.spool.RaiseSeq(mark + 1)
	if err != nil {
		return err
	}
	if raised {
		g.log.Warn("spool sequence was at or below the registry's high-water mark (spool deleted or replaced?); continuing above it",
			"gw", g.cfg.Ingest.GatewayID, "next_seq", next, "high_water", mark)
	}
	return nil
}

// raiseSeqPastStoredRegistry is raiseSeqPastRegistry for a gateway that does not process
// (--process none): a registry that local mode left in the data directory applies this spool's
// records when local mode runs again, and would drop those numbered at or below its mark. Without
// a registry file it does nothing; one it cannot read is logged and left alone (local mode will
// report it).
func (g *Gateway) raiseSeqPastStoredRegistry() {
	path := filepath.Join(g.cfg.Spool.DataDir, "registry.db")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return
	}
	reg, err := registry.Open(path, registry.Options{Logger: g.log.With("component", "registry")})
	if err == nil {
		err = errors.Join(g.raiseSeqPastRegistry(reg), reg.Close())
	}
	if err != nil {
		g.log.Warn("cannot check the spool's sequence against the registry left by local mode", "err", err)
	}
}

// run is the processor as an actor: it applies the spool until ctx ends (the batch being
// applied stays in the spool and is applied after the next start) and returns nil then. It
// returns an error when the processor stops by itself (the spool closed) or the registry failed
// in a way retrying cannot fix.
func (l *local) run(ctx context.Context, src processor.Source) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	l.guard.arm(cancel)
	err := l.proc.Run(ctx, src)
	if fatal := l.guard.fatal(); fatal != nil {
		return fatal
	}
	if err != nil {
		return fmt.Errorf("processor: %w", err)
	}
	if ctx.Err() == nil {
		return errors.New("processor returned while running")
	}
	return nil
}

// close closes the event streams and the registry (after run has returned).
func (l *local) close(g *Gateway) {
	l.api.Close()
	if err := l.reg.Close(); err != nil {
		g.log.Error("close registry", "err", err)
	}
}

// storeGuard is the processor's Sink in local mode: the registry, watched for store errors that
// retrying cannot fix. The processor retries every sink error (a transient one heals: a busy
// database, a full disk that gets space); on a permanent one the guard ends the processor's run
// with that error, so the gateway stops taking records nothing would apply.
type storeGuard struct {
	sink processor.Sink
	// processed, if set (before the processor runs), is told the highest sequence number of
	// each batch the sink applied: the device API's shadow budget (ingest.Handler.Processed).
	processed func(seq uint64)
	mu        sync.Mutex
	cancel    context.CancelCauseFunc
	err       error
}

var _ processor.Sink = (*storeGuard)(nil)

func (s *storeGuard) arm(cancel context.CancelCauseFunc) {
	s.mu.Lock()
	s.cancel = cancel
	s.mu.Unlock()
}

func (s *storeGuard) fatal() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Apply applies b; a permanent store error also ends the run.
func (s *storeGuard) Apply(ctx context.Context, b *processor.Batch) ([]processor.Outcome, error) {
	out, err := s.sink.Apply(ctx, b)
	if err == nil && s.processed != nil && len(b.Items) > 0 {
		var last uint64
		for i := range b.Items {
			last = max(last, b.Items[i].Seq)
		}
		s.processed(last)
	}
	if err != nil && permanentStoreError(err) {
		s.mu.Lock()
		if s.err == nil {
			s.err = fmt.Errorf("registry failed for good: %w", err)
		}
		if s.cancel != nil {
			s.cancel(s.err)
		}
		s.mu.Unlock()
	}
	return out, err
}

// permanentStoreError reports whether err is an SQLite error no retry can fix: the database is
// corrupt (SQLITE_CORRUPT), not a database (SQLITE_NOTADB) or cannot be written (SQLITE_READONLY,
// which includes a database file moved or deleted under the process). Busy, locked, full-disk and
// I/O errors are left to the processor's retries.
func permanentStoreError(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_READONLY:
		return true
	}
	return false
}

// rate turns the accepted-records counter into records per second between status calls.
type rate struct {
	mu    sync.Mutex
	lastN uint64
	lastT time.Time
	perS  float64
}

func (r *rate) update(n uint64, now time.Time) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if dt := now.Sub(r.lastT); !r.lastT.IsZero() && dt >= 500*time.Millisecond {
		r.perS = float64(n-r.lastN) / dt.Seconds()
		r.lastN, r.lastT = n, now
	} else if r.lastT.IsZero() {
		r.lastN, r.lastT = n, now
	}
	return r.perS
}

func (g *Gateway) status() httpapi.Status {
	st := g.spool.Stats()
	s := httpapi.Status{
		Version:           Version,
		StartedAt:         g.started,
		Ready:             g.ready.Load(),
		AcceptedPerSecond: g.rate.update(g.ingest.Accepted(), time.Now()),
		SpoolDepth:        st.Depth,
		SpoolBytes:        st.Bytes,
	}
	if g.local != nil {
		s.ProcessorLagSeconds = g.local.proc.Lag().Seconds()
	}
	return s
}
