package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// fakeGateway answers GET /health the way respond says, on a loopback UDP socket.
func fakeGateway(t *testing.T, respond func(req *coapmsg.Message, conn *net.UDPConn, peer *net.UDPAddr)) string {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, peer, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			var m coapmsg.Message
			if m.Decode(buf[:n]) != nil || m.Code != coapmsg.GET {
				continue
			}
			if p, _ := m.Option(coapmsg.URIPath); string(p) != "health" {
				continue
			}
			respond(&m, conn, peer)
		}
	}()
	return conn.LocalAddr().String()
}

func send(t *testing.T, conn *net.UDPConn, peer *net.UDPAddr, m coapmsg.Message) {
	b, err := m.Append(nil)
	if err != nil {
		t.Error(err)
		return
	}
	_, _ = conn.WriteToUDP(b, peer)
}

func TestProbe(t *testing.T) {
	piggyback := fakeGateway(t, func(req *coapmsg.Message, conn *net.UDPConn, peer *net.UDPAddr) {
		send(t, conn, peer, coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.Content, MID: req.MID, Token: req.Token, Payload: []byte(`{"status":"ok"}`)})
	})
	separate := fakeGateway(t, func(req *coapmsg.Message, conn *net.UDPConn, peer *net.UDPAddr) {
		send(t, conn, peer, coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.Empty, MID: req.MID})
		send(t, conn, peer, coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.Content, MID: req.MID + 1, Token: req.Token})
	})
	unavailable := fakeGateway(t, func(req *coapmsg.Message, conn *net.UDPConn, peer *net.UDPAddr) {
		send(t, conn, peer, coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.ServiceUnavailable, MID: req.MID, Token: req.Token})
	})
	drops := 0
	lossy := fakeGateway(t, func(req *coapmsg.Message, conn *net.UDPConn, peer *net.UDPAddr) {
		if drops++; drops == 1 { // lose the first transmission: the retransmission must get through
			return
		}
		send(t, conn, peer, coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.Content, MID: req.MID, Token: req.Token})
	})
	silent := fakeGateway(t, func(*coapmsg.Message, *net.UDPConn, *net.UDPAddr) {})
	// The gateway verifies the address first (RFC 9175 Echo), then answers.
	echo := fakeGateway(t, func(req *coapmsg.Message, conn *net.UDPConn, peer *net.UDPAddr) {
		if v, ok := req.Option(coapmsg.Echo); ok && string(v) == "echo-value-1" {
			send(t, conn, peer, coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.Content, MID: req.MID, Token: req.Token})
			return
		}
		send(t, conn, peer, coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.Unauthorized, MID: req.MID, Token: req.Token,
			Options: []coapmsg.Option{{Number: coapmsg.Echo, Value: []byte("echo-value-1")}}})
	})
	// A 4.01 without Echo is a failure, not a loop.
	unauthorized := fakeGateway(t, func(req *coapmsg.Message, conn *net.UDPConn, peer *net.UDPAddr) {
		send(t, conn, peer, coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.Unauthorized, MID: req.MID, Token: req.Token})
	})

	for _, tc := range []struct {
		name, addr, wantErr string
	}{
		{"piggybacked", piggyback, ""},
		{"separate", separate, ""},
		{"retransmitted", lossy, ""},
		{"5.03", unavailable, "5.03"},
		{"silent", silent, "no answer"},
		{"Echo", echo, ""},
		{"4.01", unauthorized, "4.01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := probe(context.Background(), tc.addr, 2500*time.Millisecond)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("probe: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("probe error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

type fakeCW struct {
	in []*cloudwatch.PutMetricDataInput
}

func (f *fakeCW) PutMetricData(_ context.Context, in *cloudwatch.PutMetricDataInput, _ ...func(*cloudwatch.Options)) (*cloudwatch.PutMetricDataOutput, error) {
	f.in = append(f.in, in)
	return &cloudwatch.PutMetricDataOutput{}, nil
}

func TestRunPublishesAggregate(t *testing.T) {
	ok := fakeGateway(t, func(req *coapmsg.Message, conn *net.UDPConn, peer *net.UDPAddr) {
		send(t, conn, peer, coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.Content, MID: req.MID, Token: req.Token})
	})
	silent := fakeGateway(t, func(*coapmsg.Message, *net.UDPConn, *net.UDPAddr) {})
	cw := &fakeCW{}
	c, err := fromEnv(func(k string) string {
		return map[string]string{"COAPGW_CANARY_TARGETS": ok + ", " + silent, "COAPGW_CANARY_NAMESPACE": "coapgw/test", "COAPGW_CANARY_TIMEOUT": "1500ms"}[k]
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c.cw = cw
	if err := c.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, in := range cw.in {
		if *in.Namespace != "coapgw/test" {
			t.Errorf("namespace %q", *in.Namespace)
		}
		for _, d := range in.MetricData {
			if len(d.Dimensions) == 0 {
				got[*d.MetricName] = *d.Value
			}
		}
	}
	if got["HealthCheckOK"] != 1 || got["HealthCheckFailed"] != 1 {
		t.Errorf("aggregate metrics %v, want 1 OK and 1 failed", got)
	}
}

func TestFromEnvRejects(t *testing.T) {
	for _, env := range []map[string]string{
		{},
		{"COAPGW_CANARY_TARGETS": "no-port"},
		{"COAPGW_CANARY_TARGETS": "a:1", "COAPGW_CANARY_TIMEOUT": "-1s"},
	} {
		if _, err := fromEnv(func(k string) string { return env[k] }, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("fromEnv(%v) accepted", env)
		}
	}
}

// TestProbeRealGateway probes a running gateway when COAPGW_CANARY_TEST_TARGET names one
// (e.g. 127.0.0.1:5683 after `go run ./cmd/coapgw`).
func TestProbeRealGateway(t *testing.T) {
	target := os.Getenv("COAPGW_CANARY_TEST_TARGET")
	if target == "" {
		t.Skip("COAPGW_CANARY_TEST_TARGET not set")
	}
	if err := probe(context.Background(), target, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}
