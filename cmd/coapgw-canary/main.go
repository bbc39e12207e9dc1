// Command coapgw-canary is a scheduled AWS Lambda function that checks the gateways as a device
// would: it sends a confirmable CoAP GET /health to every gateway address and publishes the result
// to CloudWatch (PutMetricData), which the deployment's canary alarm watches.
//
// With an identity (COAPGW_CANARY_IDENTITY) the canary speaks CoAP over DTLS 1.2 with a
// pre-shared key, as a device does: it authenticates as that identity with the key derived for
// it from the fleet master key, HKDF-SHA256(master, salt nil, info "coapgw psk v1 " + identity,
// 16 bytes), offering TLS_PSK_WITH_AES_128_CCM_8 and TLS_PSK_WITH_AES_128_GCM_SHA256 and
// supporting Connection IDs. A new session is opened for each probe and closed after it. A
// handshake that does not complete fails the probe, with the reason in the log. Without an
// identity it sends plain CoAP.
//
// The master key is COAPGW_FLEET_KEY (hex, for local testing) or the AWS Secrets Manager secret
// COAPGW_FLEET_KEY_SECRET_ARN (exactly one of them). The secret is read on the first run of a
// Lambda environment and kept; it is read again on the run after a failed handshake, so a
// rotated key is picked up. Its binary value (SecretBinary) is the key as it is; a string value
// (SecretString) is read as hex, else base64 (standard or URL alphabet, padded or not), else as
// the string's own bytes. The key has at least 16 bytes (the deployment's has 32). A secret that
// cannot be read fails every probe of the run.
//
// Metrics, in namespace COAPGW_CANARY_NAMESPACE:
//
//	HealthCheckOK, HealthCheckFailed   Count, once without dimensions (the alarm) and per Target
//	LatencyMs                          Milliseconds, per Target, for answered probes (with DTLS
//	                                   from the first handshake message to the answer)
//	LagSeconds                         Seconds, per Target and without dimensions: lag_seconds of
//	                                   the gateway's /health answer (how far its forwarding is
//	                                   behind), for answers that carry it
//	SpoolDepth                         Count, per Target: spool_depth of the /health answer
//
// A probe succeeds when the gateway answers 2.05 Content (piggybacked in the ACK, or as a separate
// response after an empty ACK) within COAPGW_CANARY_TIMEOUT, which bounds the handshake too; the
// CON is retransmitted after 1 s and 2 s as RFC 7252 prescribes.
//
// Environment:
//
//	COAPGW_CANARY_TARGETS        comma-separated host:port list (required); with DTLS a host
//	                             without a port gets COAPGW_COAPS_PORT
//	COAPGW_CANARY_NAMESPACE      CloudWatch namespace (default "coapgw")
//	COAPGW_CANARY_TIMEOUT        per-probe deadline (default 5s)
//	COAPGW_CANARY_IDENTITY       PSK identity {type}/{id}, e.g. canary/coapgw-canary; set: DTLS,
//	                             unset: plain CoAP
//	COAPGW_FLEET_KEY_SECRET_ARN  Secrets Manager secret holding the fleet master key (with DTLS)
//	COAPGW_FLEET_KEY             the fleet master key in hex instead (with DTLS, local testing)
//	COAPGW_COAPS_PORT            port of targets written without one, with DTLS (default 5684)
//
// Build for the provided.al2023 runtime (arm64): make lambda-zip.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	cwtypes "github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/coapgw/coapgw/internal/coapclient"
	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/record"
)

// metricPutter is the part of the CloudWatch client the canary uses.
type metricPutter interface {
	PutMetricData(ctx context.Context, in *cloudwatch.PutMetricDataInput, opts ...func(*cloudwatch.Options)) (*cloudwatch.PutMetricDataOutput, error)
}

type canary struct {
	targets   []string
	namespace string
	timeout   time.Duration
	identity  string    // PSK identity; "" for plain CoAP
	key       *fleetKey // with identity
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
	if c.key != nil && c.key.arn != "" {
		c.key.secrets = secretsmanager.NewFromConfig(cfg)
	}
	lambda.Start(c.run)
}

func fromEnv(getenv func(string) string, log *slog.Logger) (*canary, error) {
	c := &canary{namespace: "coapgw", timeout: 5 * time.Second, log: log}
	if err := c.dtlsFromEnv(getenv); err != nil {
		return nil, err
	}
	coapsPort := "5684"
	if p := getenv("COAPGW_COAPS_PORT"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("COAPGW_COAPS_PORT=%q: want a port number", p)
		}
		coapsPort = strconv.Itoa(n)
	}
	for _, t := range strings.Split(getenv("COAPGW_CANARY_TARGETS"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			if _, _, err := net.SplitHostPort(t); err != nil && c.identity != "" {
				if withPort := net.JoinHostPort(t, coapsPort); validHostPort(withPort) {
					t = withPort // a host without a port
				}
			}
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

func validHostPort(s string) bool {
	_, _, err := net.SplitHostPort(s)
	return err == nil
}

// dtlsFromEnv reads the identity and where its key comes from: both or neither.
func (c *canary) dtlsFromEnv(getenv func(string) string) error {
	id, hexKey, arn := getenv("COAPGW_CANARY_IDENTITY"), getenv("COAPGW_FLEET_KEY"), getenv("COAPGW_FLEET_KEY_SECRET_ARN")
	if id == "" {
		if hexKey != "" || arn != "" {
			return errors.New("COAPGW_FLEET_KEY or COAPGW_FLEET_KEY_SECRET_ARN is set without COAPGW_CANARY_IDENTITY")
		}
		return nil
	}
	typ, thing, ok := strings.Cut(id, "/")
	if !ok || !record.ValidName(typ) || !record.ValidName(thing) {
		return fmt.Errorf("COAPGW_CANARY_IDENTITY=%q: want {type}/{id}, each 1-128 letters, digits, ':', '_' or '-'", id)
	}
	c.identity = id
	switch {
	case (hexKey == "") == (arn == ""):
		return errors.New("COAPGW_CANARY_IDENTITY needs exactly one of COAPGW_FLEET_KEY_SECRET_ARN and COAPGW_FLEET_KEY")
	case hexKey != "":
		m, err := fixedMaster(hexKey)
		if err != nil {
			return err
		}
		c.key = &fleetKey{master: m}
	default:
		c.key = &fleetKey{arn: arn}
	}
	return nil
}

type result struct {
	target    string
	latency   time.Duration
	handshake time.Duration // DTLS only
	health    gatewayHealth
	err       error
}

// run probes every target concurrently and publishes the results. It returns an error only when
// the metrics could not be published (a failed probe is a metric, not a failed invocation).
func (c *canary) run(ctx context.Context) error {
	var psk []byte
	var keyErr error
	if c.identity != "" {
		kctx, cancel := context.WithTimeout(ctx, c.timeout)
		master, err := c.key.get(kctx)
		cancel()
		if keyErr = err; err == nil {
			psk, keyErr = devicePSK(master, c.identity)
		}
	}
	results := make([]result, len(c.targets))
	var wg sync.WaitGroup
	for i, t := range c.targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			r := result{target: t}
			switch {
			case keyErr != nil:
				r.err = keyErr
			case c.identity != "":
				r.handshake, r.health, r.err = probeDTLS(ctx, t, c.timeout, c.identity, psk)
			default:
				r.health, r.err = probe(ctx, t, c.timeout)
			}
			r.latency = time.Since(start)
			results[i] = r
		}()
	}
	wg.Wait()
	for _, r := range results {
		if _, ok := errors.AsType[*handshakeError](r.err); ok {
			c.key.forget() // the next run reads the secret again, in case the key was rotated
			break
		}
	}

	log := c.log
	if c.identity != "" {
		log = log.With("identity", c.identity)
	}
	now := time.Now()
	var ok, failed float64
	data := make([]cwtypes.MetricDatum, 0, 2+3*len(results))
	for _, r := range results {
		dims := []cwtypes.Dimension{{Name: aws.String("Target"), Value: aws.String(r.target)}}
		if r.err != nil {
			failed++
			log.Warn("probe failed", "target", r.target, "err", r.err)
			data = append(data, count("HealthCheckFailed", 1, dims, now), count("HealthCheckOK", 0, dims, now))
			continue
		}
		ok++
		if c.identity != "" {
			log.Info("probe ok", "target", r.target, "latency_ms", r.latency.Milliseconds(), "handshake_ms", r.handshake.Milliseconds())
		} else {
			log.Info("probe ok", "target", r.target, "latency_ms", r.latency.Milliseconds())
		}
		data = append(data, count("HealthCheckFailed", 0, dims, now), count("HealthCheckOK", 1, dims, now),
			cwtypes.MetricDatum{MetricName: aws.String("LatencyMs"), Dimensions: dims, Timestamp: aws.Time(now),
				Unit: cwtypes.StandardUnitMilliseconds, Value: aws.Float64(float64(r.latency.Microseconds()) / 1000)})
		// The gateway's own view of its backlog, per target and once without dimensions (the
		// maximum over the gateways is the alarm's statistic).
		if h := r.health; h.LagSeconds != nil {
			for _, d := range [][]cwtypes.Dimension{dims, nil} {
				data = append(data, cwtypes.MetricDatum{MetricName: aws.String("LagSeconds"), Dimensions: d, Timestamp: aws.Time(now),
					Unit: cwtypes.StandardUnitSeconds, Value: aws.Float64(*h.LagSeconds)})
			}
		}
		if h := r.health; h.SpoolDepth != nil {
			data = append(data, count("SpoolDepth", *h.SpoolDepth, dims, now))
		}
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
func probe(ctx context.Context, target string, timeout time.Duration) (gatewayHealth, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", target)
	if err != nil {
		return gatewayHealth{}, err
	}
	defer conn.Close()
	return checkHealth(ctx, conn)
}

// checkHealth sends CON GET /health on conn and waits, until ctx's deadline, for a 2.05
// response (with the Echo round trip probe describes). The CON is retransmitted after 1 s, 2 s,
// 4 s, ... until then.
func checkHealth(ctx context.Context, conn net.Conn) (gatewayHealth, error) {
	req := coapclient.Request{Code: coapmsg.GET, Path: []string{"health"}, ContentFormat: -1}
	resp, err := coapclient.Do(ctx, conn, req, coapclient.Params{AckTimeout: time.Second, AckRandomFactor: 1, MaxRetransmit: 16})
	if err != nil {
		return gatewayHealth{}, err
	}
	if resp.Code != coapmsg.Content {
		return gatewayHealth{}, fmt.Errorf("gateway answered %v: %.200s", resp.Code, resp.Payload)
	}
	return parseHealth(resp.Payload), nil
}

// gatewayHealth is what a gateway's /health answer says about its backlog; a field is nil when
// the answer lacks it (an older gateway, a body that is not JSON): no metric for it then.
type gatewayHealth struct {
	LagSeconds *float64 `json:"lag_seconds"`
	SpoolDepth *float64 `json:"spool_depth"`
}

// parseHealth reads the JSON /health answer; anything else gives an empty gatewayHealth.
func parseHealth(body []byte) gatewayHealth {
	var h gatewayHealth
	if json.Unmarshal(body, &h) != nil {
		return gatewayHealth{}
	}
	return h
}
