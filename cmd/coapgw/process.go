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

// processOptions are the settings of `coapgw process`.
type processOptions struct {
	queue, sink, publishTopic, dataEndpoint, awsEndpoint string
	httpAddr, logLevel, logFormat                        string
	pollers, batchSize, thingCache, iotConcurrency       int
	visibility, waitTime, batchWait, stopTimeout         time.Duration
}

func (o *processOptions) flags(fs *flag.FlagSet) {
	s := func(p *string, name, def, usage string) {
		fs.StringVar(p, name, def, usage+" (env "+config.EnvName(name)+")")
	}
	i := func(p *int, name string, def int, usage string) {
		fs.IntVar(p, name, def, usage+" (env "+config.EnvName(name)+")")
	}
	d := func(p *time.Duration, name string, def time.Duration, usage string) {
		fs.DurationVar(p, name, def, usage+" (env "+config.EnvName(name)+")")
	}
	s(&o.queue, "queue", "", "URL of the SQS queue the gateways forward to (required)")
	s(&o.sink, "sink", "awsiot", "where records go: awsiot (thing types, things, shadows in AWS IoT)")
	s(&o.publishTopic, "publish-topic", "", "also publish every record (envelope JSON) to this MQTT topic; {type} and {thing} are replaced; a Basic Ingest topic $aws/rules/<rule> works (empty: off)")
	s(&o.dataEndpoint, "iot-data-endpoint", "", "the account's iot:Data-ATS endpoint (empty: looked up with DescribeEndpoint)")
	s(&o.awsEndpoint, "aws-endpoint", "", "base URL for every AWS API (tests against an emulator only)")
	s(&o.httpAddr, "http-addr", ":8080", "TCP address for /metrics and /healthz (empty disables)")
	s(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	s(&o.logFormat, "log-format", "text", "text or json")
	i(&o.pollers, "pollers", 4, "concurrent SQS long polls")
	i(&o.batchSize, "batch-size", 1000, "most messages applied as one batch (one shadow update per thing per batch)")
	i(&o.thingCache, "thing-cache-size", 100_000, "things remembered (type, shadow version and state)")
	i(&o.iotConcurrency, "iot-concurrency", 32, "things updated at once within a batch")
	d(&o.visibility, "visibility-timeout", 60*time.Second, "visibility timeout requested on receive; a batch must finish within 5/6 of it")
	d(&o.waitTime, "wait-time", 20*time.Second, "long-polling wait of each receive (at most 20s); a stop waits for the polls in flight")
	d(&o.batchWait, "batch-wait", 250*time.Millisecond, "how long a batch gathers messages after its first")
	d(&o.stopTimeout, "stop-timeout", 15*time.Second, "on SIGTERM, how long the current batch may still take")
}

// envDefaults sets every flag not given on the command line from its COAPGW_* variable.
func envDefaults(fs *flag.FlagSet, getenv func(string) string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		if v := getenv(config.EnvName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", config.EnvName(f.Name), v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// runProcess implements `coapgw process`: it consumes the SQS queue the gateways forward to and
// applies the records to AWS IoT (internal/consume, internal/sink/awsiot) until SIGTERM or
// SIGINT, then stops gracefully. Credentials and region come from the AWS SDK default chain
// (instance or task role, AWS_* variables). Exit codes: 0 after a clean stop, 1 when it could not
// start, 2 for bad usage.
func runProcess(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("coapgw process", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o processOptions
	o.flags(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: coapgw process --queue <SQS URL> [flags]

Consumes the SQS queue the gateways forward to and applies each record to AWS IoT: the thing type
and thing are created on first sight, the thing's shadow (state.reported) gets the record's
properties, newest received_at winning per property. A message is deleted only once its record
is applied; records that can never be applied are left for the queue's redrive policy to move to
the dead-letter queue. Every flag has a COAPGW_* environment variable; the flag wins.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "coapgw process: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if err := envDefaults(fs, os.Getenv); err != nil {
		fmt.Fprintf(stderr, "coapgw process: %v\n", err)
		return 2
	}
	log, err := processLogger(o.logLevel, o.logFormat, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "coapgw process: %v\n", err)
		return 2
	}
	if o.sink != "awsiot" {
		fmt.Fprintf(stderr, "coapgw process: sink %q: only awsiot is supported\n", o.sink)
		return 2
	}
	ccfg := consume.Config{
		QueueURL: o.queue, Pollers: o.pollers, BatchSize: o.batchSize, WaitTime: o.waitTime, BatchWait: o.batchWait,
		VisibilityTimeout: o.visibility, StopTimeout: o.stopTimeout,
	}
	scfg := awsiot.Config{PublishTopic: o.publishTopic, DataEndpoint: o.dataEndpoint, ThingCacheSize: o.thingCache, Concurrency: o.iotConcurrency}
	if err := errors.Join(ccfg.Validate(), scfg.Validate()); err != nil {
		fmt.Fprintf(stderr, "coapgw process: invalid configuration:\n%v\n", err)
		return 2
	}

	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		log.Error("load AWS configuration", "err", err)
		return 1
	}
	if o.awsEndpoint != "" {
		awsCfg.BaseEndpoint = &o.awsEndpoint
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sink, err := awsiot.New(scfg, awsCfg, log, reg)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	proc, err := processor.New(processor.Config{BatchSize: o.batchSize}, sink, log, reg)
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
	if o.httpAddr != "" {
		ln, err := net.Listen("tcp", o.httpAddr)
		if err != nil {
			log.Error("listen", "addr", o.httpAddr, "err", err)
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
