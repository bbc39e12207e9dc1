package gateway

import (
	"context"
	"fmt"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/coapgw/coapgw/internal/config"
	"github.com/coapgw/coapgw/internal/forward"
	"github.com/coapgw/coapgw/internal/queue/sqs"
)

// forwarding is the AWS pipeline's half of the gateway: the spool's records go to SQS.
type forwarding struct {
	fwd    *forward.Forwarder
	cancel context.CancelFunc
	done   chan struct{}
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
	pub, err := sqs.New(sqs.Config{QueueURL: g.cfg.AWS.Queue}, awsCfg)
	if err != nil {
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

func (f *forwarding) start(g *Gateway) {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	go func() {
		defer close(f.done)
		if err := f.fwd.Run(ctx); err != nil {
			g.log.Error("forwarder stopped", "err", err)
		}
	}()
}

// stop lets calls in flight finish (within the forwarder's grace period) and commits what SQS
// accepted; the rest stays in the spool for the next start.
func (f *forwarding) stop() {
	if f.cancel != nil {
		f.cancel()
		<-f.done
		f.cancel = nil
	}
}
