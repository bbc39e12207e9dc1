package gateway

import (
	"errors"
	"fmt"
	"time"

	"github.com/coapgw/coapgw/internal/forward"
	"github.com/coapgw/coapgw/internal/ops"
)

// stageErr is /readyz's view of the stage after the spool (the forwarder to SQS, or the local
// processor): nil while it keeps up; once it is further behind than --ready-max-lag, why — its
// calls to SQS or its batches failing (since when, how many, the last error), or it is too slow
// — with the spool's backlog. Devices are not turned away for it: the spool takes their records
// while it has room (with --ack-after queue they get 5.03 after --queue-ack-timeout anyway).
func (g *Gateway) stageErr() error {
	limit := g.cfg.CoAP.ReadyMaxLag
	if limit <= 0 {
		return nil
	}
	lag := g.lag()
	if lag <= limit {
		return nil
	}
	depth := g.spool.Stats().Depth
	behind := fmt.Sprintf("%s behind (ready-max-lag %s), %d records in the spool", lag.Round(time.Second), limit, depth)
	switch {
	case g.forward != nil:
		if st := g.forward.fwd.Stats(); st.Failures > 0 {
			return fmt.Errorf("queue failing for %s (%d calls in a row, last: %v): forwarder %s",
				time.Since(st.FailingSince).Round(time.Second), st.Failures, st.LastError, behind)
		}
		return errors.New("forwarder too slow: " + behind)
	case g.local != nil:
		if st := g.local.proc.Stats(); st.Retrying {
			return fmt.Errorf("registry failing (last: %s): processor %s", st.LastError, behind)
		}
		return errors.New("processor too slow: " + behind)
	}
	return nil
}

// queueAckRun logs, with --ack-after queue, the runs of records SQS did not accept in time (the
// device got 5.03): once when a run starts and once when a record is accepted in time again,
// with the count, instead of once per request.
func (g *Gateway) queueAckRun() *ops.FailureRun {
	return ops.NewFailureRun(g.log.With("component", "forward"),
		"records not accepted by the queue in time; devices get 5.03, the records stay in the spool and are forwarded later",
		"the queue accepts records in time again")
}

// noteQueueAck records the outcome of one --ack-after queue wait.
func (g *Gateway) noteQueueAck(err error) {
	switch {
	case err == nil:
		g.queueAcks.OK()
	case !errors.Is(err, forward.ErrStopped): // a stop is no failure of the queue
		g.queueAcks.Fail(err)
	}
}
