package main

// End-to-end test of the AWS pipeline: devices post over CoAP to the real gateway binary with
// --queue (moto's SQS), `coapgw process` applies the queue to moto's AWS IoT, and the thing, its
// type and its shadow are read back through the AWS SDK.

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/coapgw/coapgw/internal/awstest"
	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
	"github.com/coapgw/coapgw/internal/sink/awsiot"
)

func awsEnv(t *testing.T) {
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
		"AWS_REGION": awstest.Region, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"} {
		t.Setenv(k, v)
	}
}

func TestAWSPipelineEndToEnd(t *testing.T) {
	m := awstest.Start(t)
	awsEnv(t)
	queue := m.CreateQueue(t.Context(), "coapgw-e2e", nil)
	for _, ackAfter := range []string{"spool", "queue"} {
		t.Run("ack-after="+ackAfter, func(t *testing.T) {
			g := startGW(t, t.TempDir(), "--queue", queue, "--aws-endpoint", m.Endpoint(), "--ack-after", ackAfter)
			c, err := coaptest.Dial(g.coap)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for i := 0; i < 5; i++ {
				resp, err := c.Post(fmt.Sprintf("/aws/dev-%s-%d", ackAfter, i%2), fmt.Sprintf(`{"n":%d,"temp":%d.5}`, i, 20+i))
				if err != nil || resp.Code != coapmsg.Changed {
					t.Fatalf("post %d: %v %+v\n%s", i, err, resp, g.stderr)
				}
			}
			if ackAfter == "queue" {
				// SQS outage: with ack-after=queue the device is told 5.03, not 2.04; the record
				// stays in the spool and goes out when the queue is back.
				m.Stop()
				c.Timeout = 15 * time.Second
				resp, err := c.Post("/aws/dev-outage", `{"during":"outage"}`)
				if err != nil || resp.Code != coapmsg.ServiceUnavailable {
					t.Fatalf("post during an outage: %v %+v", err, resp)
				}
				m.Restart()
				m.CreateQueue(t.Context(), "coapgw-e2e", nil)
			}
			if err := g.stop(syscall.SIGTERM); err != nil {
				t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
			}
		})
	}

	// The worker applies the queue to AWS IoT.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"process", "--queue", queue, "--sink", "awsiot", "--aws-endpoint", m.Endpoint(),
			"--http-addr", fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t)), "--batch-wait", "50ms", "--wait-time", "1s"}, io.Discard, os.Stderr)
	}()
	reader, err := awsiot.New(awsiot.Config{}, m.AWSConfig(t.Context()), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// moto forgets the queue on restart, so only what was sent after the outage reaches IoT: the
	// record the device was told 5.03 for (it was in the spool all along).
	want := map[string]string{"dev-outage": `{"during":"outage"}`}
	for thing, shadow := range want {
		deadline := time.Now().Add(60 * time.Second)
		for {
			s, _, err := reader.Shadow(t.Context(), thing)
			if err == nil && s == shadow {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s shadow %q (%v), want %s", thing, s, err, shadow)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	d, err := iot.NewFromConfig(m.AWSConfig(t.Context())).DescribeThing(t.Context(), &iot.DescribeThingInput{ThingName: aws.String("dev-outage")})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(d.ThingTypeName); got != "aws" {
		t.Fatalf("dev-outage has type %q, want aws", got)
	}
	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("coapgw process exited %d", c)
	}
}
