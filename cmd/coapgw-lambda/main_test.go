package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/coapgw/coapgw/internal/awstest"
	"github.com/coapgw/coapgw/internal/envelope"
	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/sink/awsiot"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestSinkConfig(t *testing.T) {
	c, err := loadConfig(env(map[string]string{"COAPGW_THING_CACHE_SIZE": "500", "COAPGW_IOT_CONCURRENCY": "8", "COAPGW_PUBLISH_TOPIC": "t/{thing}"}))
	cfg := sinkConfig(c.IoT)
	if err != nil || cfg.ThingCacheSize != 500 || cfg.Concurrency != 8 || cfg.PublishTopic != "t/{thing}" {
		t.Fatalf("%+v %v", cfg, err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []map[string]string{
		{"COAPGW_THING_CACHE_SIZE": "many"},
		{"COAPGW_IOT_CONCURRENCY": "0"},
		{"COAPGW_PUBLISH_TOPIC": "a/#"},
		{"COAPGW_LOG_LEVEL": "loud"},
	} {
		if _, err := loadConfig(env(bad)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	// Every problem at once.
	_, err = loadConfig(env(map[string]string{"COAPGW_IOT_CONCURRENCY": "0", "COAPGW_PUBLISH_TOPIC": "a/#", "COAPGW_LOG_LEVEL": "loud", "COAPGW_THING_CACHE_SIZE": "many"}))
	for _, want := range []string{"iot-concurrency", "publish-topic", "log-level", "COAPGW_THING_CACHE_SIZE"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s not reported: %v", want, err)
		}
	}
}

func TestCheckConfig(t *testing.T) {
	var out, errb strings.Builder
	bad := env(map[string]string{"COAPGW_IOT_CONCURRENCY": "0", "COAPGW_PUBLISH_TOPIC": "a/#", "COAPGW_THING_CACHE_SIZE": "many"})
	if code := checkConfig([]string{"--check-config"}, bad, &out, &errb); code != 2 {
		t.Fatalf("bad environment: exit %d", code)
	}
	for _, want := range []string{"iot-concurrency 0", "publish-topic", "COAPGW_THING_CACHE_SIZE"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("%s not reported:\n%s", want, errb.String())
		}
	}
	out.Reset()
	if code := checkConfig([]string{"--check-config"}, env(map[string]string{"COAPGW_THING_CACHE_SIZE": "500"}), &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "thing_cache_size: 500\n") || strings.Contains(out.String(), "coap_addr") {
		t.Fatalf("exit %d\n%s", code, out.String())
	}
	if code := checkConfig([]string{"serve"}, env(nil), &out, &errb); code != 2 {
		t.Fatalf("unknown argument: exit %d", code)
	}
}

// TestHandlerFromEnvironment builds the function as the runtime would (SDK default chain, the
// COAPGW_* variables) and invokes it with an SQS event against moto.
func TestHandlerFromEnvironment(t *testing.T) {
	m := awstest.Start(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_REGION", awstest.Region)
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	cfg, err := loadConfig(env(map[string]string{"COAPGW_AWS_ENDPOINT": m.Endpoint()}))
	if err != nil {
		t.Fatal(err)
	}
	h, err := newHandler(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r := processortest.Rec("gw-1", "sensor", "dev-1", time.Unix(1_800_000_000, 0), `{"temp":21}`)
	r.Seq = 1
	body, _ := envelope.Encode(r)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	resp, err := h.HandleSQSEvent(ctx, events.SQSEvent{Records: []events.SQSMessage{{MessageId: "m-1", Body: body}, {MessageId: "m-2", Body: "junk"}}})
	if err != nil || len(resp.BatchItemFailures) != 1 || resp.BatchItemFailures[0].ItemIdentifier != "m-2" {
		t.Fatalf("%+v %v", resp, err)
	}
	reader, _ := awsiot.New(awsiot.Config{}, m.AWSConfig(t.Context()), nil, nil)
	if s, _, err := reader.Shadow(t.Context(), "dev-1"); err != nil || s != `{"temp":21}` {
		t.Fatalf("shadow %q %v", s, err)
	}
}

// TestMemoryDefaults: in a 256 MB function the thing cache gets 64 MiB and the Go runtime a 90 %
// soft limit; COAPGW_THING_CACHE_BYTES and GOMEMLIMIT win; outside Lambda nothing changes.
func TestMemoryDefaults(t *testing.T) {
	c, err := loadConfig(env(map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256", "COAPGW_FIFO_QUEUE": "true", "COAPGW_ADOPT_THINGS": "true"}))
	cfg := sinkConfig(c.IoT)
	if err != nil || cfg.ThingCacheBytes != 64<<20 || !cfg.Ordered || !cfg.AdoptThings {
		t.Fatalf("%+v %v", cfg, err)
	}
	if limit, _ := memoryDefaults(env(map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256"})); limit != 256<<20*9/10 {
		t.Fatalf("limit %d", limit)
	}
	if limit, _ := memoryDefaults(env(map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256", "GOMEMLIMIT": "100MiB"})); limit != 0 {
		t.Fatalf("GOMEMLIMIT overridden: %d", limit)
	}
	c, _ = loadConfig(env(map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256", "COAPGW_THING_CACHE_BYTES": "8MiB"}))
	if c.IoT.ThingCacheBytes != 8<<20 {
		t.Fatalf("explicit size lost: %d", c.IoT.ThingCacheBytes)
	}
	c, _ = loadConfig(env(nil))
	if l, cache := memoryDefaults(env(nil)); l != 0 || cache != 0 || c.IoT.ThingCacheBytes != 64<<20 {
		t.Fatalf("outside Lambda: %d %d %d", l, cache, c.IoT.ThingCacheBytes)
	}
}
