package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgw/coapgw/internal/processor/spoolsource"
)

// group runs the gateway's actors (the CoAP server, the operations server, the local processor
// or the forwarder), each a goroutine that blocks in its Run or Serve until it is stopped. It is
// a run group in the manner of oklog/run as Prometheus uses it, with one difference: actors are
// stopped one by one in the gateway's dependency order (shutdown), not all interrupted at once.
// An actor that returns before the group is stopping has died: the first such end is reported
// on failed, and the gateway fails over to not ready, 5.03 and an orderly exit.
type group struct {
	wg       sync.WaitGroup
	stopping atomic.Bool
	failed   chan error // the first unexpected end of an actor
}

func newGroup() *group { return &group{failed: make(chan error, 1)} }

// actor is one running component.
type actor struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error // Run's result, set before done closes
	died   bool  // it returned before the group was stopping (reported on failed)
}

// start runs fn in a goroutine with a context that stop cancels.
func (gr *group) start(name string, fn func(ctx context.Context) error) *actor {
	ctx, cancel := context.WithCancel(context.Background())
	a := &actor{name: name, cancel: cancel, done: make(chan struct{})}
	gr.wg.Go(func() {
		defer close(a.done)
		a.err = fn(ctx)
		if gr.stopping.Load() {
			return
		}
		a.died = true
		err := a.err
		if err == nil {
			err = errors.New("stopped unexpectedly")
		}
		select {
		case gr.failed <- fmt.Errorf("%s: %w", name, err):
		default:
		}
	})
	return a
}

// stop cancels the actor's context and waits until it has returned. It returns the actor's
// error unless that was reported on failed already (the actor died before).
func (a *actor) stop() error {
	if a == nil {
		return nil
	}
	a.cancel()
	<-a.done
	if a.died {
		return nil
	}
	return a.err
}

// Serve runs until ctx ends or a component dies, then shuts down in dependency order: new
// telemetry gets 5.03, the requests already handed to the spool are answered, the CoAP sockets
// close, the processor finishes its batch (or the forwarder its calls) and stops, the spool is
// flushed and closed, the HTTP server stops and the registry closes.
//
// A component dies when the CoAP or HTTP server fails, the forwarder's Run returns, or the local
// processor stops for a store error that retrying cannot fix (see permanentStoreError). Then
// /readyz answers 503 at once, every new telemetry request gets 5.03 (nothing would ever take
// the record), and after --fail-linger (so that a load balancer's health check sees it, unless
// ctx ends first) the gateway shuts down as above and Serve returns the component's error: the
// process exits non-zero for systemd or the orchestrator to restart it.
func (g *Gateway) Serve(ctx context.Context) error {
	gr := newGroup()
	g.started = time.Now()
	transports := make([]*actor, len(g.transports))
	for i, t := range g.transports {
		transports[i] = gr.start(t.name, t.Serve)
	}
	var httpActor *actor
	if g.ops != nil {
		httpActor = gr.start("http", func(context.Context) error { return g.ops.Serve() })
	}
	var stage *actor // the stage after the spool
	switch {
	case g.local != nil:
		stage = gr.start("processor", func(ctx context.Context) error { return g.local.run(ctx, spoolsource.New(g.spool)) })
	case g.forward != nil:
		stage = gr.start("forwarder", g.forward.fwd.Run)
	}
	var emf *actor
	if g.emf != nil {
		emf = gr.start("emf", g.emf.Run)
	}
	var downlink *actor // the downlink from AWS IoT
	if g.awsDownlink != nil {
		downlink = gr.start("aws-downlink", g.awsDownlink.Run)
	}
	g.log.Info("coapgw serving", "process", g.cfg.Local.Process, "queue", g.cfg.AWS.Queue, "ack_after", g.cfg.Forward.AckAfter, "coap", addrString(g.CoAPAddr()), "coaps", addrString(g.CoAPSAddr()), "http", g.HTTPAddr(), "data_dir", g.cfg.Spool.DataDir, "version", Version)
	g.ready.Store(true) // after the start line, so that whoever saw /readyz 200 can read it

	var failure error
	select {
	case <-ctx.Done():
	case failure = <-gr.failed:
		g.fail(failure)
		if d := g.cfg.CoAP.FailLinger; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
	}
	gr.stopping.Store(true)
	g.shutdown(transports, stage, httpActor, downlink)
	emf.stop() // after the spool's close: its last document shows what the stop left
	gr.wg.Wait()
	return failure
}

// fail flips the gateway to not ready and makes new telemetry get 5.03, at once.
func (g *Gateway) fail(err error) {
	g.failure.Store(&err)
	g.ready.Store(false)
	g.ingest.Drain()
	g.log.Error("a component failed; answering 5.03 and shutting down", "err", err, "linger", g.cfg.CoAP.FailLinger)
}

// shutdown stops the actors and closes the rest in dependency order.
func (g *Gateway) shutdown(transports []*actor, stage, httpActor, downlink *actor) {
	g.log.Info("shutting down")
	g.ready.Store(false)
	g.ingest.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.CoAP.ShutdownTimeout)
	var wg sync.WaitGroup // the transports' in-flight requests are waited for together
	for _, t := range g.transports {
		wg.Go(func() {
			if err := t.Shutdown(ctx); err != nil {
				g.log.Warn("shutdown timeout with requests in flight; they were not acknowledged", "transport", t.name, "err", err)
			}
		})
	}
	wg.Wait()
	cancel()
	for _, a := range transports {
		a.stop()
	}
	downlink.stop() // no device is answered any more
	if err := stage.stop(); err != nil && !errors.Is(err, context.Canceled) {
		g.log.Error("stop "+stage.name, "err", err)
	}
	if err := g.spool.Close(); err != nil {
		g.log.Error("close spool", "err", err)
	}
	if g.ops != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := g.ops.Shutdown(ctx); err != nil {
			g.log.Warn("stop http", "err", err)
		}
		cancel()
		httpActor.stop()
	}
	if g.local != nil {
		g.local.close(g)
	}
	g.log.Info("stopped")
}

// addrString is a bound address for the log, "off" when the server was not opened.
func addrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return "off"
	}
	return a.String()
}
