package config

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ackTimeout is CoAP's ACK_TIMEOUT (RFC 7252): a piggybacked answer must come well before it.
const ackTimeout = 2 * time.Second

// minPiggyback is the shortest piggyback deadline: the exchange layer checks deadlines every
// quarter of it (so at least 4ns, or time.NewTicker panics), and a deadline shorter than a
// spool fsync would turn every answer into an empty ACK and a separate response.
const minPiggyback = time.Millisecond

// Validate reports every problem of role's settings at once. It resolves host names in
// addresses (a few seconds at most), but binds nothing.
func (c *Config) Validate(role Role) error {
	v := &validator{}
	if ep := c.AWS.Endpoint; ep != "" {
		if u, err := url.Parse(ep); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			v.bad("aws-endpoint %q: want an http(s) URL", ep)
		}
	}
	if role&(Serve|Process) != 0 {
		c.validateLog(v, role)
		v.addr("http-addr", c.HTTP.Addr, true)
		c.validateHTTP(v)
	}
	switch role {
	case Serve:
		c.validateServe(v)
		c.validateCompat(v)
	case Process:
		c.validateQueueURL(v, true)
		c.validateConsume(v)
		c.validateIoT(v)
	case Lambda:
		c.validateLog(v, role)
		c.validateIoT(v)
	}
	return errors.Join(v.errs...)
}

type validator struct{ errs []error }

func (v *validator) bad(format string, a ...any) { v.errs = append(v.errs, fmt.Errorf(format, a...)) }

// addr checks that a listen address can be bound: host:port, a port 0–65535 (or a service
// name), a host that is empty, an IP address or a name that resolves.
func (v *validator) addr(name, addr string, allowEmpty bool) {
	if addr == "" {
		if !allowEmpty {
			v.bad("%s must not be empty", name)
		}
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.bad("%s %q: want host:port, e.g. :5683 or 127.0.0.1:5683 (%v)", name, addr, err)
		return
	}
	if n, err := strconv.Atoi(port); err == nil {
		if n < 0 || n > 65535 {
			v.bad("%s %q: port %d is out of range 0–65535", name, addr, n)
		}
	} else if _, err := net.LookupPort("tcp", port); port == "" || err != nil {
		v.bad("%s %q: port %q is not a number 0–65535 or a known service", name, addr, port)
	}
	if host == "" {
		return
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := net.DefaultResolver.LookupHost(ctx, host); err != nil {
		v.bad("%s %q: host %q does not resolve: %v", name, addr, host, err)
	}
}

func (v *validator) positive(name string, d time.Duration) {
	if d <= 0 {
		v.bad("%s %s: must be positive", name, d)
	}
}

func (c *Config) validateLog(v *validator, role Role) {
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		v.bad("log-level %q: want debug, info, warn or error", c.Log.Level)
	}
	if role != Lambda && c.Log.Format != "text" && c.Log.Format != "json" {
		v.bad("log-format %q: want text or json", c.Log.Format)
	}
	if role == Serve {
		if c.EMF.Interval < 0 || (c.EMF.Interval > 0 && c.EMF.Interval < time.Second) {
			v.bad("emf-interval %s: want 0 (off) or at least 1s", c.EMF.Interval)
		}
		if a := c.EMF.Addr; a != "" && !strings.HasPrefix(a, "tcp://") && !strings.HasPrefix(a, "udp://") {
			v.bad("emf-addr %q: want empty, tcp://host:port or udp://host:port", a)
		}
		if n := c.EMF.Namespace; n == "" || len(n) > 255 || strings.HasPrefix(n, "AWS/") {
			v.bad("emf-namespace %q: want 1–255 characters, not starting with AWS/", n)
		}
	}
}

func (c *Config) validateQueueURL(v *validator, required bool) {
	q := c.AWS.Queue
	if q == "" {
		if required {
			v.bad("queue is required: the URL of the SQS queue (https://sqs.<region>.amazonaws.com/<account>/<name>)")
		}
		return
	}
	u, err := url.Parse(q)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || strings.Trim(u.Path, "/") == "" {
		v.bad("queue %q: want the queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)", q)
	}
}

func (c *Config) validateServe(v *validator) {
	v.addr("coap-addr", c.CoAP.Addr, false)
	c.validateIdentity(v)
	if c.Spool.DataDir == "" {
		v.bad("data-dir must not be empty")
	}
	if id := c.Ingest.GatewayID; id == "" || len(id) > 128 {
		v.bad("gateway-id must be 1–128 bytes")
	}
	if p := c.Ingest.MaxPayload; p < 1 || p > 64*KiB {
		v.bad("max-payload %d: want 1–65536 bytes", p)
	}
	if r := c.Ingest.RetryAfter; r < time.Second || r > time.Hour {
		v.bad("retry-after %s: want 1s–1h", r)
	}
	v.positive("shutdown-timeout", c.CoAP.ShutdownTimeout)
	if d := c.CoAP.FailLinger; d < 0 || d > 10*time.Minute {
		v.bad("fail-linger %s: want 0–10m", d)
	}
	if d := c.CoAP.ReadyMaxLag; d < 0 {
		v.bad("ready-max-lag %s: want 0 (off) or more", d)
	}
	if c.Spool.SegmentBytes < 64*KiB {
		v.bad("spool-segment-bytes %s: want at least 64KiB", c.Spool.SegmentBytes)
	}
	if c.Spool.MaxBytes < c.Spool.SegmentBytes {
		v.bad("spool-max-bytes %s: want at least spool-segment-bytes (%s)", c.Spool.MaxBytes, c.Spool.SegmentBytes)
	}
	if n := c.CoAP.Sockets; n < 1 || n > 64 {
		v.bad("coap-sockets %d: want 1–64", n)
	}
	if b := c.CoAP.SocketBuffer; b < 64*KiB || b > GiB {
		v.bad("socket-buffer %s: want 64KiB–1GiB", b)
	}
	if d := c.CoAP.PiggybackDeadline; d < minPiggyback || d >= ackTimeout {
		v.bad("piggyback-deadline %s: want at least %s and less than ACK_TIMEOUT (%s)", d, minPiggyback, ackTimeout)
	}
	if c.CoAP.DedupMaxEntries < 1 || c.CoAP.DedupPerPeer < 1 {
		v.bad("dedup-max-entries and dedup-per-peer must be positive")
	}
	if b := c.CoAP.BlockSize; b < 16 || b > KiB || b&(b-1) != 0 {
		v.bad("block-size %s: want a power of two 16B–1KiB", b)
	}
	if m := c.CoAP.BlockMaxBytes; m < c.Ingest.MaxPayload+KiB || m > 64*GiB {
		v.bad("blockwise-max-bytes %s: want at least max-payload + 1KiB (%s)", m, c.Ingest.MaxPayload+KiB)
	}
	if c.CoAP.BlockPerPeer < 1 {
		v.bad("blockwise-per-peer %d: want at least 1", c.CoAP.BlockPerPeer)
	}
	v.positive("blockwise-timeout", c.CoAP.BlockTimeout)
	if c.CoAP.MaxObservers < 1 {
		v.bad("max-observers %d: want at least 1", c.CoAP.MaxObservers)
	}
	v.positive("observe-keepalive", c.CoAP.ObserveKeepAlive)
	if r := c.Ingest.DeviceRate; r < 0 || r > 1_000_000 {
		v.bad("device-rate %d: want 0 (no limit) to 1000000 records a minute", r)
	}
	if b := c.Ingest.DeviceBurst; b < 1 || b > 1_000_000 {
		v.bad("device-burst %d: want 1–1000000", b)
	}
	if n := c.Ingest.DeviceRateDevices; n < 64 || n > 100_000_000 {
		v.bad("device-rate-devices %d: want 64–100000000", n)
	}

	l := c.Local
	if l.Process != "local" && l.Process != "none" {
		v.bad("process %q: want local or none", l.Process)
	}
	if l.Batch < 1 || l.Batch > 100_000 {
		v.bad("processor-batch %d: want 1–100000", l.Batch)
	}
	v.positive("processor-backoff-min", l.BackoffMin)
	if l.BackoffMax < l.BackoffMin {
		v.bad("processor-backoff-max %s: want at least processor-backoff-min (%s)", l.BackoffMax, l.BackoffMin)
	}
	if l.HistoryMaxAge < time.Minute {
		v.bad("history-max-age %s: want at least 1m", l.HistoryMaxAge)
	}
	if l.HistoryMaxPoints < 1 {
		v.bad("history-max-points must be positive")
	}
	if n := l.MaxThings; n < 0 || n > 100_000_000 {
		v.bad("max-things %d: want 0 (no cap) to 100000000", n)
	}
	if b := l.HistoryMaxBytes; b != 0 && b < MiB {
		v.bad("history-max-bytes %s: want 0 (no cap) or at least 1MiB", b)
	}
	if n := l.MaxSetAside; n < 1 || n > 100_000_000 {
		v.bad("max-set-aside %d: want 1–100000000", n)
	}
	if n := l.MaxProperties; n < 0 {
		v.bad("max-properties %d: want 0 (no cap) or more", n)
	}

	c.validateQueueURL(v, false)
	c.validateDownlink(v)
	f := c.Forward
	if f.AckAfter != "spool" && f.AckAfter != "queue" {
		v.bad("ack-after %q: want spool or queue", f.AckAfter)
	}
	if f.AckAfter == "queue" && c.AWS.Queue == "" {
		v.bad("ack-after queue needs --queue")
	}
	v.positive("queue-ack-timeout", f.QueueAckTimeout)
	if f.Concurrency < 1 || f.Concurrency > 256 {
		v.bad("forward-concurrency %d: want 1–256", f.Concurrency)
	}
	if f.MaxPending < 1 {
		v.bad("forward-max-pending must be positive")
	}
	v.positive("forward-backoff-base", f.BackoffBase)
	if f.BackoffMax < f.BackoffBase {
		v.bad("forward-backoff-max %s: want at least forward-backoff-base (%s)", f.BackoffMax, f.BackoffBase)
	}
	if f.MaxRejects < 1 {
		v.bad("forward-max-rejects must be positive")
	}
	v.positive("forward-commit-interval", f.CommitInterval)
	v.positive("forward-shutdown-grace", f.ShutdownGrace)
	if b := f.QueueMaxBatch; b < 256*KiB || b > MiB {
		v.bad("queue-max-batch-bytes %s: want 256KiB–1MiB (a record must fit)", b)
	}
	if f.MaxWaiters < 1 {
		v.bad("forward-max-waiters must be positive")
	}
}

func (c *Config) validateConsume(v *validator) {
	s := c.Consume
	if s.Sink != "awsiot" {
		v.bad("sink %q: only awsiot is supported", s.Sink)
	}
	if s.Pollers < 1 || s.Pollers > 64 {
		v.bad("pollers %d: want 1–64", s.Pollers)
	}
	if s.BatchSize < 1 || s.BatchSize > 100_000 {
		v.bad("batch-size %d: want 1–100000", s.BatchSize)
	}
	if d := s.VisibilityTimeout; d < 10*time.Second || d > 12*time.Hour {
		v.bad("visibility-timeout %s: want 10s–12h", d)
	}
	if d := s.WaitTime; d < 0 || d > 20*time.Second {
		v.bad("wait-time %s: want 0–20s", d)
	}
	if s.BatchWait < 0 {
		v.bad("batch-wait %s: must not be negative", s.BatchWait)
	}
	v.positive("stop-timeout", s.StopTimeout)
}

func (c *Config) validateIoT(v *validator) {
	s := c.IoT
	if s.ThingCacheSize < 1 {
		v.bad("thing-cache-size %d: want a positive number", s.ThingCacheSize)
	}
	if s.ThingCacheBytes < 1 {
		v.bad("thing-cache-bytes %d: want a positive size", s.ThingCacheBytes)
	}
	if s.Concurrency < 1 || s.Concurrency > 1024 {
		v.bad("iot-concurrency %d: want 1–1024", s.Concurrency)
	}
	if t := s.PublishTopic; t != "" && (strings.ContainsAny(t, "+#") || strings.HasPrefix(t, "/") || len(t) > 256) {
		v.bad("publish-topic %q: no wildcards, no leading '/', at most 256 bytes", t)
	}
}

// validateIdentity checks the DTLS and credential settings.
func (c *Config) validateIdentity(v *validator) {
	cr := c.Credentials
	switch cr.PlainCoAP {
	case "", "open", "unbound", "off":
	default:
		v.bad("plain-coap %q: want open, unbound or off", cr.PlainCoAP)
	}
	perDevice := cr.KeyFile != "" || cr.Key != ""
	fleet := 0
	for _, s := range []string{cr.FleetKeyFile, cr.FleetKey, cr.FleetKeySecretARN} {
		if s != "" {
			fleet++
		}
	}
	switch {
	case perDevice && fleet > 0:
		v.bad("key-file (per-device keys) and a fleet key are both set: choose one credential source")
	case fleet > 1:
		v.bad("the fleet master key is set more than one way: choose fleet-key-file, COAPGW_FLEET_KEY or fleet-key-secret-arn")
	}
	if perDevice && (c.AWS.Queue != "" || c.Local.Process != "local") {
		v.bad("key-file: per-device keys live in the local registry, which needs local mode (--process local, no --queue); use a fleet key with --queue")
	}
	if cr.RevocationFile != "" && fleet == 0 {
		v.bad("revocation-file is for fleet keys (per-device keys are revoked with coapgw device revoke)")
	}
	if arn := cr.FleetKeySecretARN; arn != "" && !strings.HasPrefix(arn, "arn:") {
		v.bad("fleet-key-secret-arn %q: want a Secrets Manager ARN (arn:aws:secretsmanager:…)", arn)
	}
	if !cr.Configured() {
		if cr.PlainCoAP == "off" || cr.PlainCoAP == "unbound" {
			v.bad("plain-coap %s needs a credential source (key-file, fleet-key-file, fleet-key-secret-arn, COAPGW_KEY or COAPGW_FLEET_KEY)", cr.PlainCoAP)
		}
		return
	}
	v.addr("coaps-addr", c.DTLS.Addr, false)
	if cr.PlainCoAP != "off" && c.DTLS.Addr == c.CoAP.Addr {
		v.bad("coaps-addr and coap-addr are both %q", c.DTLS.Addr)
	}
	if n := c.DTLS.MaxSessions; n < 1 || n > 10_000_000 {
		v.bad("dtls-max-sessions %d: want 1–10000000", n)
	}
	if d := c.DTLS.IdleTimeout; d < time.Minute {
		v.bad("dtls-idle-timeout %s: want at least 1m", d)
	}
	if n := c.DTLS.MaxHandshakes; n < 1 || n > 1_000_000 {
		v.bad("dtls-max-handshakes %d: want 1–1000000", n)
	}
	if d := c.DTLS.HandshakeTimeout; d < 100*time.Millisecond || d > 5*time.Minute {
		v.bad("dtls-handshake-timeout %s: want 100ms–5m", d)
	}
	if d := c.DTLS.RecheckInterval; d < 100*time.Millisecond || d > time.Minute {
		v.bad("dtls-recheck-interval %s: want 100ms–1m", d)
	}
	if d := c.DTLS.HibernateAfter; d == 0 || (d > 0 && d < time.Second) {
		v.bad("dtls-hibernate-after %s: want at least 1s, or negative for never", d)
	}
}

// validateHTTP checks the operations server's limits: a zero timeout would mean none.
func (c *Config) validateHTTP(v *validator) {
	h := c.HTTP
	v.positive("http-read-timeout", h.ReadTimeout)
	v.positive("http-write-timeout", h.WriteTimeout)
	v.positive("http-idle-timeout", h.IdleTimeout)
	if h.MaxConns < 1 {
		v.bad("http-max-conns %d: want at least 1", h.MaxConns)
	}
}
