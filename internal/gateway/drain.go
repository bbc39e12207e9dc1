package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/coapgw/coapgw/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

// DrainResult is what Drain did.
type DrainResult struct {
	Records   int64         // spool entries waiting when Drain started
	Remaining int64         // entries still waiting when it returned (0 when drained)
	Took      time.Duration // time from start to return
}

// ErrNotDrained is returned by Drain when ctx ended before the spool was empty.
var ErrNotDrained = errors.New("spool not drained")

// drainPoll is how often Drain looks at the spool's depth.
const drainPoll = 100 * time.Millisecond

// Drain forwards every record waiting in <data-dir>/spool to the queue (cfg.AWS.Queue) and
// returns once the spool is empty: every record accepted by SQS (or dropped as rejected, counted
// and logged by the forwarder as in serve) and the cursor committed. It is `coapgw drain`, run
// after `coapgw serve` stopped on an instance about to be terminated, so that records already
// acknowledged with 2.04 do not go down with the spool volume. The spool's lock makes it fail at
// once while serve still runs. If ctx ends first, the cursor keeps what was forwarded and Drain
// returns an error wrapping ErrNotDrained with the rest still in the spool.
func Drain(ctx context.Context, cfg config.Config, log *slog.Logger) (DrainResult, error) {
	start := time.Now()
	if cfg.AWS.Queue == "" {
		return DrainResult{}, errors.New("drain: no queue (--queue): only a gateway that forwards to SQS has a spool to drain")
	}
	g := &Gateway{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	sp, err := g.openSpool()
	if err != nil {
		return DrainResult{}, fmt.Errorf("drain: %w", err)
	}
	res := DrainResult{Records: sp.Stats().Depth}
	defer func() {
		if err := sp.Close(); err != nil {
			log.Error("close spool", "err", err)
		}
	}()
	if err := g.openForward(); err != nil {
		return res, fmt.Errorf("drain: %w", err)
	}
	log.Info("draining the spool to the queue", "records", res.Records, "queue", cfg.AWS.Queue, "incarnation", sp.Incarnation())
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- g.forward.fwd.Run(runCtx) }()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	var runErr error
wait:
	for sp.Stats().Depth > 0 {
		select {
		case <-ctx.Done():
			break wait
		case runErr = <-ran:
			ran = nil
			break wait
		case <-tick.C:
		}
	}
	stop()
	if ran != nil {
		runErr = <-ran
	}
	res.Remaining, res.Took = sp.Stats().Depth, time.Since(start)
	if res.Remaining > 0 {
		if st := g.forward.fwd.Stats(); st.Failures > 0 {
			return res, fmt.Errorf("%w: %d records left; the queue is failing (%d calls in a row, last: %v)", ErrNotDrained, res.Remaining, st.Failures, st.LastError)
		}
		if runErr != nil && !errors.Is(runErr, context.Canceled) {
			return res, fmt.Errorf("%w: %d records left: forwarder: %w", ErrNotDrained, res.Remaining, runErr)
		}
		return res, fmt.Errorf("%w: %d records left", ErrNotDrained, res.Remaining)
	}
	log.Info("spool drained", "records", res.Records, "took", res.Took.Round(time.Millisecond))
	return res, nil
}
