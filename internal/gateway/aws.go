package gateway

import (
	"context"
	"fmt"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/coapgw/coapgw/internal/config"
	"github.com/coapgw/coapgw/internal/forward"
	"github.com/coapgw/coapgw/internal/queue/sqs"
)

// forwarding is the AWS pipeline's half of the gateway: the spool's records go to SQS.
type forwarding struct {
	fwd *forward.Forwarder // runs as an actor: its Run returns only when stopped or the spool failed
}

func (g *Gateway) openForward() error {
	ctx := context.Background()
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx) // credentials only from the SDK's default chain
	if err != nil {
		return fmt.Errorf("load AWS config: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = sqs.RegionFromURL(g.cfg.AWS.Queue)
	}
	if g.cfg.AWS.Endpoint != "" {
		awsCfg.BaseEndpoint = &g.cfg.AWS.Endpoint
	}
	pub, err := sqs.New(sqs.Config{
		QueueURL: g.cfg.AWS.Queue, FIFO: g.cfg.Forward.QueueFIFO, MaxBatchBytes: int(g.cfg.Forward.QueueMaxBatch),
		Seed:        g.cfg.Compat.Envelope == "seed",
		Incarnation: g.spool.Incarnation(), // FIFO dedup ids unique even where the gateway id repeats
	}, awsCfg)
	if err != nil {
		return err
	}
	if err := g.raiseFreshSeq(time.Now()); err != nil {
		return err
	}
	if err := g.openAWSDownlink(awsCfg); err != nil {
		return err
	}
	fwd, err := forward.New(forwardConfig(g.cfg.Forward), g.spool, pub, g.log.With("component", "forward"), g.reg)
	if err != nil {
		return err
	}
	g.forward = &forwarding{fwd: fwd}
	return nil
}

// forwardConfig passes the forwarder's settings on. A zero --forward-linger means partial batches
// go out at once (the forwarder's "never waits"), not its default.
func forwardConfig(c config.Forward) forward.Config {
	if c.Linger == 0 {
		c.Linger = -1
	}
	return forward.Config{
		Concurrency: c.Concurrency, MaxPending: c.MaxPending, Linger: c.Linger,
		BackoffBase: c.BackoffBase, BackoffMax: c.BackoffMax, MaxRejects: c.MaxRejects,
		CommitInterval: c.CommitInterval, ShutdownGrace: c.ShutdownGrace, MaxWaiters: c.MaxWaiters,
	}
}

// raiseFreshSeq starts a new spool's sequence at the wall clock in nanoseconds. In AWS mode the
// gateway cannot ask what was applied, but (gw, seq) is the idempotency key downstream: the FIFO
// queue's deduplication id for 5 minutes, and consumers of published records. A spool directory
// deleted or replaced would restart at 1 and repeat keys an earlier spool used; starting at the
// clock puts it above every number an earlier spool handed out, as long as the clock is not behind
// the one the earlier spool ran under (an earlier spool gets to the current time only by handing
// out a billion numbers per second of its life). A spool with state is left as it is.
func (g *Gateway) raiseFreshSeq(now time.Time) error {
	if !g.spool.Fresh() || now.UnixNano() <= 0 {
		return nil
	}
	_, err := g.spool.RaiseSeq(uint64(now.UnixNano()))
	return err
}
