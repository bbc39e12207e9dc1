package gateway

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/coapgw/coapgw/internal/httpapi"
	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/registry"
)

// local is local mode's half of the pipeline: the processor applies spool records to the embedded
// registry, and the HTTP API and dashboard read it.
type local struct {
	reg  *registry.Registry
	proc *processor.Processor
	api  *httpapi.API

	cancel context.CancelFunc
	done   chan struct{}
}

func (g *Gateway) openLocal() error {
	reg, err := registry.Open(filepath.Join(g.cfg.Spool.DataDir, "registry.db"), registry.Options{
		HistoryMaxAge: g.cfg.Local.HistoryMaxAge, HistoryMaxPoints: g.cfg.Local.HistoryMaxPoints,
		Logger: g.log.With("component", "registry"),
	})
	if err != nil {
		return fmt.Errorf("open registry: %w", err)
	}
	l := &local{reg: reg}
	l.api = httpapi.New(httpapi.Config{}, reg, g.status, g.log.With("component", "httpapi"))
	l.proc, err = processor.New(processor.Config{
		BatchSize: g.cfg.Local.Batch, BackoffMin: g.cfg.Local.BackoffMin, BackoffMax: g.cfg.Local.BackoffMax,
		OnApplied: func(things []string) { l.api.Notify(things...) },
	},
		reg, g.log.With("component", "processor"), g.reg)
	if err != nil {
		reg.Close()
		return err
	}
	g.local = l
	return nil
}

func (l *local) start(g *Gateway) {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan struct{})
	go func() {
		defer close(l.done)
		if err := l.proc.Run(ctx, g.spool); err != nil {
			g.log.Error("processor stopped", "err", err)
		}
	}()
}

// stopProcessor ends the processor after its current batch (an unfinished batch stays in the
// spool and is applied after the next start).
func (l *local) stopProcessor() {
	if l.cancel != nil {
		l.cancel()
		<-l.done
		l.cancel = nil
	}
}

// stop stops the processor and closes the event streams and the registry.
func (l *local) stop(g *Gateway) {
	l.stopProcessor()
	l.api.Close()
	if err := l.reg.Close(); err != nil {
		g.log.Error("close registry", "err", err)
	}
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
