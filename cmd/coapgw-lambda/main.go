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
// Environment (all optional):
//
//	COAPGW_PUBLISH_TOPIC       also publish every record to this MQTT topic ({type}, {thing})
//	COAPGW_IOT_DATA_ENDPOINT   the account's iot:Data-ATS endpoint (else DescribeEndpoint, once)
//	COAPGW_THING_CACHE_SIZE    things remembered per execution environment (default 100000)
//	COAPGW_IOT_CONCURRENCY     things updated at once within a batch (default 32)
//	COAPGW_LOG_LEVEL           debug, info, warn or error (default info; logs are JSON)
//	COAPGW_AWS_ENDPOINT        base URL for every AWS API (tests against an emulator only)
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/aws/aws-lambda-go/lambda"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/coapgw/coapgw/internal/consume"
	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/sink/awsiot"
)

func main() {
	log, err := newLogger(os.Getenv("COAPGW_LOG_LEVEL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "coapgw-lambda:", err)
		os.Exit(2)
	}
	h, err := newHandler(context.Background(), os.Getenv, log)
	if err != nil {
		log.Error("start", "err", err)
		os.Exit(1)
	}
	lambda.Start(h.HandleSQSEvent)
}

func newLogger(level string) (*slog.Logger, error) {
	var lvl slog.Level
	if level != "" {
		if err := lvl.UnmarshalText([]byte(strings.ToLower(level))); err != nil {
			return nil, fmt.Errorf("COAPGW_LOG_LEVEL %q: want debug, info, warn or error", level)
		}
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})), nil
}

// sinkConfig reads the sink's settings from the environment.
func sinkConfig(getenv func(string) string) (awsiot.Config, error) {
	cfg := awsiot.Config{PublishTopic: getenv("COAPGW_PUBLISH_TOPIC"), DataEndpoint: getenv("COAPGW_IOT_DATA_ENDPOINT")}
	var errs []error
	for _, v := range []struct {
		name string
		p    *int
	}{{"COAPGW_THING_CACHE_SIZE", &cfg.ThingCacheSize}, {"COAPGW_IOT_CONCURRENCY", &cfg.Concurrency}} {
		if s := getenv(v.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				errs = append(errs, fmt.Errorf("%s=%q: want a positive integer", v.name, s))
				continue
			}
			*v.p = n
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// newHandler builds the processor on the AWS IoT sink, configured from the environment, with
// credentials and region from the SDK default chain.
func newHandler(ctx context.Context, getenv func(string) string, log *slog.Logger) (*consume.Handler, error) {
	scfg, err := sinkConfig(getenv)
	if err != nil {
		return nil, err
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if ep := getenv("COAPGW_AWS_ENDPOINT"); ep != "" {
		awsCfg.BaseEndpoint = &ep
	}
	sink, err := awsiot.New(scfg, awsCfg, log, nil)
	if err != nil {
		return nil, err
	}
	proc, err := processor.New(processor.Config{}, sink, log, nil)
	if err != nil {
		return nil, err
	}
	return consume.NewHandler(proc, log)
}
