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
	}, awsCfg)
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
