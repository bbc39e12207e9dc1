package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/coapgw/coapgw/internal/config"
	"github.com/coapgw/coapgw/internal/consume"
	"github.com/coapgw/coapgw/internal/gateway"
	"github.com/coapgw/coapgw/internal/ops"
	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/sink/awsiot"
)

const processUsage = `usage: coapgw process --queue <SQS URL> [flags]

Consumes the SQS queue the gateways forward to and applies each record to AWS IoT: the thing type
and thing are created on first sight, the thing's shadow (state.reported) gets the record's
properties, newest received_at winning per property. A message is deleted only once its record
is applied; records that can never be applied are left for the queue's redrive policy to move to
the dead-letter queue. Every flag has a COAPGW_* environment variable and a snake_case key in the
--config file; the flag wins over the environment, the environment over the file.

`

// consumeConfig is the SQS worker's part of the settings.
func consumeConfig(c config.Config) consume.Config {
	return consume.Config{
		QueueURL: c.AWS.Queue, Pollers: c.Consume.Pollers, BatchSize: c.Consume.BatchSize,
		WaitTime: c.Consume.WaitTime, BatchWait: c.Consume.BatchWait,
		VisibilityTimeout: c.Consume.VisibilityTimeout, StopTimeout: c.Consume.StopTimeout,
	}
}

// sinkConfig is the AWS IoT sink's part of the settings.
func sinkConfig(c config.IoT) awsiot.Config {
	return awsiot.Config{PublishTopic: c.PublishTopic, DataEndpoint: c.DataEndpoint, ThingCacheSize: c.ThingCacheSize, ThingCacheBytes: int(c.ThingCacheBytes), Concurrency: c.Concurrency,
		Ordered: c.Ordered, AdoptThings: c.AdoptThings, Consumers: c.Consumers, CreateThingRate: c.CreateThingRate, PublishPack: c.PublishPack}
}

// runProcess implements `coapgw process`: it consumes the SQS queue the gateways forward to and
// applies the records to AWS IoT (internal/consume, internal/sink/awsiot) until SIGTERM or
// SIGINT, then stops gracefully. Credentials and region come from the AWS SDK default chain
// (instance or task role, AWS_* variables). Exit codes: 0 after a clean stop, 1 when it could not
// start, 2 for bad usage.
func runProcess(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, log, code, done := loadCommand(config.Process, "coapgw process", "coapgw process", processUsage, args, stdout, stderr)
	if done {
		return code
	}
	ccfg, scfg := consumeConfig(cfg), sinkConfig(cfg.IoT)
	scfg.Ordered = scfg.Ordered || strings.HasSuffix(cfg.AWS.Queue, ".fifo")
	scfg.SeedShadow = cfg.Compat.SeedShadow
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		log.Error("load AWS configuration", "err", err)
		return 1
	}
	if cfg.AWS.Endpoint != "" {
		awsCfg.BaseEndpoint = &cfg.AWS.Endpoint
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		ops.BuildInfo(gateway.Version, gateway.Commit))
	sink, err := awsiot.New(scfg, awsCfg, log, reg)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	proc, err := processor.New(processor.Config{BatchSize: cfg.Consume.BatchSize, SeedShadow: cfg.Compat.SeedShadow}, sink, log, reg)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	w, err := consume.New(ccfg, awsCfg, proc, log, reg)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}

	var serving atomic.Bool // /readyz: ready while the worker consumes
	ready := func() error {
		if !serving.Load() {
			return errors.New("starting or shutting down")
		}
		return nil
	}
	// Two actors: the worker and the operations server. Either ending by itself stops the other
	// and makes the exit status 1.
	wctx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	httpErr := make(chan error, 1)
	if cfg.HTTP.Addr != "" {
		oc := ops.HTTPConfig(cfg.HTTP) // the same timeouts and connection cap as serve's server
		oc.Ready = ready
		srv := ops.New(oc, reg, log.With("component", "http"))
		if err := srv.Listen(); err != nil {
			log.Error("start", "err", err)
			return 1
		}
		served := make(chan struct{})
		go func() {
			defer close(served)
			if err := srv.Serve(); err != nil {
				httpErr <- err
				stopWorker()
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
			<-served
		}()
	}
	serving.Store(true)
	err = w.Serve(wctx)
	serving.Store(false)
	select {
	case herr := <-httpErr:
		log.Error("operations server failed; stopped the worker", "err", herr)
		return 1
	default:
	}
	if err != nil {
		log.Error("consume", "err", err)
		return 1
	}
	return 0
}
