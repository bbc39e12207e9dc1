// Command coapgw-lambda is the processor as an AWS Lambda function: an SQS event source mapping
// (with ReportBatchItemFailures) on the queue the gateways forward to invokes it with batches of
// records; it applies them to AWS IoT (thing types, things, shadows) and reports only the
// messages that must come back (internal/consume.Handler). Credentials come from the function's
// role through the SDK default chain.
//
// Build for the provided.al2023 runtime (arm64):
//
//	GOOS=linux GOARCH=arm64 go build -tags lambda.norpc -o bootstrap ./cmd/coapgw-lambda
//
// `bootstrap --check-config` validates the environment, reports every problem at once and prints
// the effective settings.
//
// Environment (all optional; the same COAPGW_* variables as `coapgw process`, read by
// internal/config, every problem reported at once):
//
//	COAPGW_PUBLISH_TOPIC       also publish every record to this MQTT topic ({type}, {thing})
//	COAPGW_IOT_DATA_ENDPOINT   the account's iot:Data-ATS endpoint (else DescribeEndpoint, once)
//	COAPGW_THING_CACHE_SIZE    things remembered per execution environment (default 100000)
//	COAPGW_THING_CACHE_BYTES   their memory, estimated (default a quarter of the function's memory)
//	COAPGW_FIFO_QUEUE          the queue is FIFO, one message group per thing: blind writes
//	COAPGW_ADOPT_THINGS        use existing things (fleet provisioning, JITP) as they are
//	COAPGW_IOT_CONSUMERS       environments sharing the account's CreateThing rate (the mapping's
//	                           maximum concurrency): each paces itself to 1/N (default 1)
//	COAPGW_IOT_CREATE_THING_RATE  the account's CreateThing rate, calls/s (default 100)
//	COAPGW_PUBLISH_PACK        one publish per thing and batch, {"records":[…]}
//
// Memory: unless GOMEMLIMIT is set, the Go runtime's soft limit is 90 % of the function's memory
// (AWS_LAMBDA_FUNCTION_MEMORY_SIZE), so the collector works harder before the function is killed.
//
//	COAPGW_IOT_CONCURRENCY     things updated at once within a batch (default 32)
//	COAPGW_LOG_LEVEL           debug, info, warn or error (default info; logs are JSON)
//	COAPGW_AWS_ENDPOINT        base URL for every AWS API (tests against an emulator only)
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"

	"github.com/aws/aws-lambda-go/lambda"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/coapgw/coapgw/internal/config"
	"github.com/coapgw/coapgw/internal/consume"
	"github.com/coapgw/coapgw/internal/ops"
	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/sink/awsiot"
)

func main() {
	if len(os.Args) > 1 {
		os.Exit(checkConfig(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
	}
	cfg, err := loadConfig(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coapgw-lambda: invalid configuration:\n"+err.Error())
		os.Exit(2)
	}
	if limit, _ := memoryDefaults(os.Getenv); limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	log, err := ops.NewLogger(os.Stderr, cfg.Log.Level, "json") // Lambda logs are JSON
	if err != nil {
		fmt.Fprintln(os.Stderr, "coapgw-lambda:", err)
		os.Exit(2)
	}
	h, err := newHandler(context.Background(), cfg, log)
	if err != nil {
		log.Error("start", "err", err)
		os.Exit(1)
	}
	lambda.Start(h.HandleSQSEvent)
}

// checkConfig implements `bootstrap --check-config` (the runtime starts the function without
// arguments): it validates the environment as the function would, prints every problem or the
// effective settings, and returns the exit status.
func checkConfig(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) != 1 || (args[0] != "--check-config" && args[0] != "-check-config") {
		fmt.Fprintln(stderr, "usage: coapgw-lambda [--check-config]; settings come from COAPGW_* variables")
		return 2
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		fmt.Fprintln(stderr, "coapgw-lambda: invalid configuration:\n"+err.Error())
		return 2
	}
	fmt.Fprintln(stdout, "# configuration is valid")
	if err := cfg.WriteYAML(stdout, config.Lambda); err != nil {
		return 1
	}
	return 0
}

// loadConfig reads the function's settings from the COAPGW_* environment (the same variables as
// `coapgw process`) and validates them, every problem at once.
func loadConfig(getenv func(string) string) (config.Config, error) {
	cfg, err := config.FromEnv(config.Lambda, getenv)
	if _, cache := memoryDefaults(getenv); cache > 0 && getenv("COAPGW_THING_CACHE_BYTES") == "" {
		cfg.IoT.ThingCacheBytes = config.Size(cache)
	}
	return cfg, errors.Join(err, cfg.Validate(config.Lambda))
}

// memoryDefaults derives from the function's memory (AWS_LAMBDA_FUNCTION_MEMORY_SIZE, MB) the Go
// runtime's memory limit — 90 %, 0 when GOMEMLIMIT is set — and the thing cache's bytes, a
// quarter; both 0 outside Lambda.
func memoryDefaults(getenv func(string) string) (limit, cache int64) {
	mb, err := strconv.ParseInt(getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), 10, 64)
	if err != nil || mb <= 0 {
		return 0, 0
	}
	if getenv("GOMEMLIMIT") == "" {
		limit = mb << 20 * 9 / 10
	}
	return limit, mb << 20 / 4
}

// sinkConfig is the AWS IoT sink's part of the settings.
func sinkConfig(c config.IoT) awsiot.Config {
	return awsiot.Config{PublishTopic: c.PublishTopic, DataEndpoint: c.DataEndpoint, ThingCacheSize: c.ThingCacheSize, ThingCacheBytes: int(c.ThingCacheBytes), Concurrency: c.Concurrency,
		Ordered: c.Ordered, AdoptThings: c.AdoptThings, Consumers: c.Consumers, CreateThingRate: c.CreateThingRate, PublishPack: c.PublishPack}
}

// newHandler builds the processor on the AWS IoT sink, with credentials and region from the SDK
// default chain.
func newHandler(ctx context.Context, cfg config.Config, log *slog.Logger) (*consume.Handler, error) {
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if ep := cfg.AWS.Endpoint; ep != "" {
		awsCfg.BaseEndpoint = &ep
	}
	scfg := sinkConfig(cfg.IoT)
	scfg.SeedShadow = cfg.Compat.SeedShadow
	sink, err := awsiot.New(scfg, awsCfg, log, nil)
	if err != nil {
		return nil, err
	}
	proc, err := processor.New(processor.Config{SeedShadow: cfg.Compat.SeedShadow}, sink, log, nil)
	if err != nil {
		return nil, err
	}
	return consume.NewHandler(proc, log)
}
