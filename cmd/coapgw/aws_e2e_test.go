package main

// End-to-end test of the AWS pipeline: devices post over CoAP to the real gateway binary with
// --queue (moto's SQS), `coapgw process` applies the queue to moto's AWS IoT, and the thing, its
// type and its shadow are read back through the AWS SDK.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
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
	coapClient, err := exec.LookPath("coap-client-notls")
	if err != nil {
		t.Fatal("coap-client-notls not installed (Debian libcoap3-bin; scripts/test.sh installs it)")
	}
	// The worker applies the queue to AWS IoT.
	// startWorker runs `coapgw process` until the returned stop is called.
	startWorker := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		code := make(chan int, 1)
		go func() {
			code <- run(ctx, []string{"process", "--queue", queue, "--sink", "awsiot", "--aws-endpoint", m.Endpoint(),
				"--http-addr", fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t)), "--batch-wait", "50ms", "--wait-time", "1s"}, io.Discard, os.Stderr)
		}()
		return func() {
			cancel()
			if c := <-code; c != 0 {
				t.Errorf("coapgw process exited %d", c)
			}
		}
	}
	stopWorker := startWorker()
	reader, err := awsiot.New(awsiot.Config{}, m.AWSConfig(t.Context()), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitShadow := func(thing, shadow string) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); ; {
			s, _, err := reader.Shadow(t.Context(), thing)
			if err == nil && s == shadow {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s shadow %q (%v), want %s", thing, s, err, shadow)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, ackAfter := range []string{"spool", "queue"} {
		t.Run("ack-after="+ackAfter, func(t *testing.T) {
			g := startGW(t, t.TempDir(), "--queue", queue, "--aws-endpoint", m.Endpoint(), "--ack-after", ackAfter)
			c, err := coaptest.Dial(g.coap)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for i := 0; i < 5; i++ {
				// libcoap's client prints nothing on 2.04 and the code otherwise.
				out, err := exec.Command(coapClient, "-m", "post", "-t", "50", "-e", fmt.Sprintf(`{"n":%d,"temp":%d.5}`, i, 20+i),
					fmt.Sprintf("coap://%s/aws/dev-%s-%d", g.coap, ackAfter, i%2)).CombinedOutput()
				if err != nil || len(bytes.TrimSpace(out)) > 0 {
					t.Fatalf("coap-client post %d: %v %q\n%s", i, err, out, g.stderr)
				}
			}
			waitShadow("dev-"+ackAfter+"-0", `{"n":4,"temp":24.5}`)
			waitShadow("dev-"+ackAfter+"-1", `{"n":3,"temp":23.5}`)
			if ackAfter == "queue" {
				// SQS outage: with ack-after=queue the device is told 5.03, not 2.04; the record
				// stays in the spool and goes out when the queue is back.
				stopWorker() // moto forgets everything on restart; a fresh worker starts with cold caches
				m.Stop()
				c.Timeout = 15 * time.Second
				resp, err := c.Post("/aws/dev-outage", `{"during":"outage"}`)
				if err != nil || resp.Code != coapmsg.ServiceUnavailable {
					t.Fatalf("post during an outage: %v %+v", err, resp)
				}
				m.Restart()
				m.CreateQueue(t.Context(), "coapgw-e2e", nil)
				stopWorker = startWorker()
				// The record the device was told 5.03 for was in the spool all along: it goes out
				// once the queue is back (after the forwarder's backoff), and reaches the shadow.
				waitShadow("dev-outage", `{"during":"outage"}`)
			}
			if err := g.stop(syscall.SIGTERM); err != nil {
				t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
			}
		})
	}

	d, err := iot.NewFromConfig(m.AWSConfig(t.Context())).DescribeThing(t.Context(), &iot.DescribeThingInput{ThingName: aws.String("dev-outage")})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(d.ThingTypeName); got != "aws" {
		t.Fatalf("dev-outage has type %q, want aws", got)
	}
	stopWorker()
}
