package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/coapgw/coapgw/internal/config"
	"github.com/coapgw/coapgw/internal/consume"
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
	return awsiot.Config{PublishTopic: c.PublishTopic, DataEndpoint: c.DataEndpoint, ThingCacheSize: c.ThingCacheSize, Concurrency: c.Concurrency}
}

// runProcess implements `coapgw process`: it consumes the SQS queue the gateways forward to and
// applies the records to AWS IoT (internal/consume, internal/sink/awsiot) until SIGTERM or
// SIGINT, then stops gracefully. Credentials and region come from the AWS SDK default chain
// (instance or task role, AWS_* variables). Exit codes: 0 after a clean stop, 1 when it could not
// start, 2 for bad usage.
func runProcess(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	l, err := config.Load(config.Process, "coapgw process", processUsage, args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "coapgw process: %v\n", err)
		return 2
	}
	if len(l.Args) > 0 {
		fmt.Fprintf(stderr, "coapgw process: unexpected arguments %q\n", l.Args)
		return 2
	}
	cfg := l.Config
	if err := cfg.Validate(config.Process); err != nil {
		fmt.Fprintf(stderr, "coapgw process: invalid configuration:\n%v\n", err)
		return 2
	}
	if l.CheckOnly {
		fmt.Fprintln(stdout, "# configuration is valid")
		if err := cfg.WriteYAML(stdout, config.Process); err != nil {
			return 1
		}
		return 0
	}
	log, err := processLogger(cfg.Log.Level, cfg.Log.Format, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "coapgw process: %v\n", err)
		return 2
	}
	ccfg, scfg := consumeConfig(cfg), sinkConfig(cfg.IoT)
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		log.Error("load AWS configuration", "err", err)
		return 1
	}
	if cfg.AWS.Endpoint != "" {
		awsCfg.BaseEndpoint = &cfg.AWS.Endpoint
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sink, err := awsiot.New(scfg, awsCfg, log, reg)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	proc, err := processor.New(processor.Config{BatchSize: cfg.Consume.BatchSize}, sink, log, reg)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	w, err := consume.New(ccfg, awsCfg, proc, log, reg)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}

	var wg sync.WaitGroup
	if cfg.HTTP.Addr != "" {
		ln, err := net.Listen("tcp", cfg.HTTP.Addr)
		if err != nil {
			log.Error("listen", "addr", cfg.HTTP.Addr, "err", err)
			return 1
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		log.Info("serving metrics", "addr", ln.Addr().String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http", "err", err)
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
			wg.Wait()
		}()
	}
	if err := w.Serve(ctx); err != nil {
		log.Error("consume", "err", err)
		return 1
	}
	return 0
}

func processLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToLower(level))); err != nil {
		return nil, fmt.Errorf("log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log-format %q: want text or json", format)
}
