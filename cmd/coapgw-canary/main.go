// Command coapgw-canary is a scheduled AWS Lambda function that checks the gateways as a device
// would: it sends a confirmable CoAP GET /health to every gateway address and publishes the result
// to CloudWatch (PutMetricData), which the deployment's canary alarm watches.
//
// Metrics, in namespace COAPGW_CANARY_NAMESPACE:
//
//	HealthCheckOK, HealthCheckFailed   Count, once without dimensions (the alarm) and per Target
//	LatencyMs                          Milliseconds, per Target, for answered probes
//
// A probe succeeds when the gateway answers 2.05 Content (piggybacked in the ACK, or as a separate
// response after an empty ACK) within COAPGW_CANARY_TIMEOUT; the CON is retransmitted after 1 s
// and 2 s as RFC 7252 prescribes.
//
// Environment:
//
//	COAPGW_CANARY_TARGETS    comma-separated host:port list (required)
//	COAPGW_CANARY_NAMESPACE  CloudWatch namespace (default "coapgw")
//	COAPGW_CANARY_TIMEOUT    per-probe deadline (default 5s)
//
// Build for the provided.al2023 runtime (arm64): make lambda-zip.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	cwtypes "github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// metricPutter is the part of the CloudWatch client the canary uses.
type metricPutter interface {
	PutMetricData(ctx context.Context, in *cloudwatch.PutMetricDataInput, opts ...func(*cloudwatch.Options)) (*cloudwatch.PutMetricDataOutput, error)
}

type canary struct {
	targets   []string
	namespace string
	timeout   time.Duration
	cw        metricPutter
	log       *slog.Logger
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	c, err := fromEnv(os.Getenv, log)
	if err != nil {
		log.Error("config", "err", err)
		os.Exit(2)
	}
	cfg, err := awsconfig.LoadDefaultConfig(context.Background())
	if err != nil {
		log.Error("aws config", "err", err)
		os.Exit(1)
	}
	c.cw = cloudwatch.NewFromConfig(cfg)
	lambda.Start(c.run)
}

func fromEnv(getenv func(string) string, log *slog.Logger) (*canary, error) {
	c := &canary{namespace: "coapgw", timeout: 5 * time.Second, log: log}
	for _, t := range strings.Split(getenv("COAPGW_CANARY_TARGETS"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			if _, _, err := net.SplitHostPort(t); err != nil {
				return nil, fmt.Errorf("COAPGW_CANARY_TARGETS: %q: %w", t, err)
			}
			c.targets = append(c.targets, t)
		}
	}
	if len(c.targets) == 0 {
		return nil, errors.New("COAPGW_CANARY_TARGETS is empty")
	}
	if ns := getenv("COAPGW_CANARY_NAMESPACE"); ns != "" {
		c.namespace = ns
	}
	if s := getenv("COAPGW_CANARY_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("COAPGW_CANARY_TIMEOUT=%q: want a positive duration", s)
		}
		c.timeout = d
	}
	return c, nil
}

type result struct {
	target  string
	latency time.Duration
	err     error
}

// run probes every target concurrently and publishes the results. It returns an error only when
// the metrics could not be published (a failed probe is a metric, not a failed invocation).
func (c *canary) run(ctx context.Context) error {
	results := make([]result, len(c.targets))
	var wg sync.WaitGroup
	for i, t := range c.targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			err := probe(ctx, t, c.timeout)
			results[i] = result{target: t, latency: time.Since(start), err: err}
		}()
	}
	wg.Wait()

	now := time.Now()
	var ok, failed float64
	data := make([]cwtypes.MetricDatum, 0, 2+3*len(results))
	for _, r := range results {
		dims := []cwtypes.Dimension{{Name: aws.String("Target"), Value: aws.String(r.target)}}
		if r.err != nil {
			failed++
			c.log.Warn("probe failed", "target", r.target, "err", r.err)
			data = append(data, count("HealthCheckFailed", 1, dims, now), count("HealthCheckOK", 0, dims, now))
			continue
		}
		ok++
		c.log.Info("probe ok", "target", r.target, "latency_ms", r.latency.Milliseconds())
		data = append(data, count("HealthCheckFailed", 0, dims, now), count("HealthCheckOK", 1, dims, now),
			cwtypes.MetricDatum{MetricName: aws.String("LatencyMs"), Dimensions: dims, Timestamp: aws.Time(now),
				Unit: cwtypes.StandardUnitMilliseconds, Value: aws.Float64(float64(r.latency.Microseconds()) / 1000)})
	}
	data = append(data, count("HealthCheckFailed", failed, nil, now), count("HealthCheckOK", ok, nil, now))
	// PutMetricData takes at most 1000 data points per call.
	for len(data) > 0 {
		n := min(len(data), 1000)
		if _, err := c.cw.PutMetricData(ctx, &cloudwatch.PutMetricDataInput{Namespace: aws.String(c.namespace), MetricData: data[:n]}); err != nil {
			return fmt.Errorf("put metric data: %w", err)
		}
		data = data[n:]
	}
	return nil
}

func count(name string, v float64, dims []cwtypes.Dimension, t time.Time) cwtypes.MetricDatum {
	return cwtypes.MetricDatum{MetricName: aws.String(name), Dimensions: dims, Timestamp: aws.Time(t),
		Unit: cwtypes.StandardUnitCount, Value: aws.Float64(v)}
}

// probe sends CON GET /health to target and waits for a 2.05 response. A 4.01 with an Echo
// option (the gateway verifying the canary's address before a larger answer, RFC 9175) is
// followed by the same request carrying the Echo value, as a device would.
func probe(ctx context.Context, target string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", target)
	if err != nil {
		return err
	}
	defer conn.Close()
	opts := []coapmsg.Option{{Number: coapmsg.URIPath, Value: []byte("health")}}
	resp, err := exchange(ctx, conn, opts)
	if err != nil {
		return err
	}
	if echo, ok := resp.Option(coapmsg.Echo); ok && resp.Code == coapmsg.Unauthorized {
		opts = append(opts, coapmsg.Option{Number: coapmsg.Echo, Value: echo})
		if resp, err = exchange(ctx, conn, opts); err != nil {
			return err
		}
	}
	if resp.Code != coapmsg.Content {
		return fmt.Errorf("gateway answered %v: %.200s", resp.Code, resp.Payload)
	}
	return nil
}

// exchange sends a CON GET with opts (sorted) and a fresh MID and token on conn and returns the
// response, piggybacked or separate, or an error when ctx's deadline passes first.
func exchange(ctx context.Context, conn net.Conn, opts []coapmsg.Option) (*coapmsg.Message, error) {
	deadline, _ := ctx.Deadline()
	var rnd [10]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	mid := binary.BigEndian.Uint16(rnd[:2])
	token := rnd[2:]
	req := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.GET, MID: mid, Token: token, Options: opts}
	wire, err := req.Append(nil)
	if err != nil {
		return nil, err
	}

	buf := make([]byte, 2048)
	acked := false
	// RFC 7252 §4.2: retransmit a CON with doubling timeouts until acknowledged.
	for wait := time.Second; ; wait *= 2 {
		if !acked {
			if _, err := conn.Write(wire); err != nil {
				return nil, err
			}
		}
		until := time.Now().Add(wait)
		if until.After(deadline) || acked {
			until = deadline
		}
		if err := conn.SetReadDeadline(until); err != nil {
			return nil, err
		}
		for {
			n, err := conn.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return nil, err
			}
			m := &coapmsg.Message{}
			if m.Decode(buf[:n]) != nil {
				continue
			}
			switch {
			case m.Type == coapmsg.Reset && m.MID == mid:
				return nil, errors.New("gateway answered RST")
			case m.Type == coapmsg.Acknowledgement && m.MID == mid && m.Code == coapmsg.Empty:
				acked = true // separate response follows
				if err := conn.SetReadDeadline(deadline); err != nil {
					return nil, err
				}
				continue
			case string(m.Token) != string(token) || !m.Code.IsResponse():
				continue
			}
			if m.Type == coapmsg.Confirmable { // separate response: acknowledge it
				ack := coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.Empty, MID: m.MID}
				if b, err := ack.Append(nil); err == nil {
					_, _ = conn.Write(b)
				}
			}
			return m, nil
		}
		if !time.Now().Before(deadline) {
			return nil, errors.New("no answer within the probe timeout")
		}
	}
}
