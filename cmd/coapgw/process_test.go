package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/coapgw/coapgw/internal/awstest"
	"github.com/coapgw/coapgw/internal/envelope"
	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/sink/awsiot"
)

// syncBuffer is a bytes.Buffer safe for the logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestProcessCommand runs `coapgw process` (flags and COAPGW_* variables, credentials from the
// SDK default chain) against moto until it is stopped, as SIGTERM would.
func TestProcessCommand(t *testing.T) {
	m := awstest.Start(t)
	awsEnv(t)
	queue := m.CreateQueue(t.Context(), "coapgw", nil)
	t.Setenv("COAPGW_QUEUE", queue)
	t.Setenv("COAPGW_POLLERS", "2")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()

	q := awssqs.NewFromConfig(m.AWSConfig(t.Context()))
	for i := range 20 {
		r := processortest.Rec("gw-1", "sensor", fmt.Sprintf("dev-%d", i%4), time.Unix(1_800_000_000+int64(i), 0), fmt.Sprintf(`{"n":%d}`, i))
		r.Seq = uint64(i + 1)
		body, _ := envelope.Encode(r)
		if _, err := q.SendMessage(t.Context(), &awssqs.SendMessageInput{QueueUrl: &queue, MessageBody: aws.String(body)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"process", "--aws-endpoint", m.Endpoint(), "--http-addr", addr, "--batch-wait", "50ms", "--wait-time", "1s"}, io.Discard, &stderr)
	}()
	reader, _ := awsiot.New(awsiot.Config{}, m.AWSConfig(t.Context()), nil, nil)
	deadline := time.Now().Add(60 * time.Second)
	for {
		s, _, err := reader.Shadow(t.Context(), "dev-3")
		if err == nil && s == `{"n":19}` {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev-3 shadow %q %v; log:\n%s", s, err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `coapgw_consume_messages_total{result="deleted"}`) {
		t.Fatalf("metrics:\n%s", metrics)
	}
	// The same operations server as the gateway's: liveness and readiness.
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"status":`) {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit %d; log:\n%s", c, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("did not stop")
	}
	if got := run(context.Background(), []string{"process", "--queue", "nope"}, io.Discard, io.Discard); got != 2 {
		t.Fatalf("bad queue URL: exit %d", got)
	}
}
