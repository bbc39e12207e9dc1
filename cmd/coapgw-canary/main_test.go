package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
			_, err := probe(context.Background(), tc.addr, 2500*time.Millisecond)
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
		send(t, conn, peer, coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.Content, MID: req.MID, Token: req.Token,
			Payload: []byte(`{"status":"ok","spool_depth":1234,"lag_seconds":97.25,"version":"x"}`)})
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
	// The answering gateway's lag_seconds and spool_depth from /health become metrics; the
	// silent one has none.
	perTarget := map[string]map[string]float64{}
	for _, in := range cw.in {
		for _, d := range in.MetricData {
			if len(d.Dimensions) == 1 {
				tgt := *d.Dimensions[0].Value
				if perTarget[tgt] == nil {
					perTarget[tgt] = map[string]float64{}
				}
				perTarget[tgt][*d.MetricName] = *d.Value
			}
		}
	}
	if got["LagSeconds"] != 97.25 || perTarget[ok]["LagSeconds"] != 97.25 || perTarget[ok]["SpoolDepth"] != 1234 {
		t.Errorf("lag and depth: aggregate %v, per target %v; want 97.25 s and 1234", got, perTarget[ok])
	}
	if _, has := perTarget[silent]["LagSeconds"]; has {
		t.Errorf("a lag for the gateway that did not answer: %v", perTarget[silent])
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

// TestProbeRealGateway probes the real gateway, built from ../coapgw and run in its default
// local mode: its /health answer is bigger than three times the request, so the probe must go
// through the Echo round trip (RFC 9175) as well. A stopped gateway fails the probe.
func TestProbeRealGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gateway")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "coapgw")
	if out, err := exec.Command("go", "build", "-o", bin, "../coapgw").CombinedOutput(); err != nil {
		t.Fatalf("build coapgw: %v\n%s", err, out)
	}
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	target := ln.LocalAddr().String()
	ln.Close()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := hl.Addr().String()
	hl.Close()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "--data-dir", filepath.Join(dir, "data"), "--coap-addr", target, "--http-addr", httpAddr)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := probe(context.Background(), target, 5*time.Second); err != nil {
		t.Fatalf("probe of the running gateway: %v\n%s", err, stderr.String())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	stopped = true
	if err := <-exited; err != nil {
		t.Fatalf("gateway exit: %v\n%s", err, stderr.String())
	}
	if _, err := probe(context.Background(), target, 3*time.Second); err == nil {
		t.Fatal("probe of a stopped gateway succeeded")
	}
}
