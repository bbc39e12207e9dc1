package awsdownlink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
)

// Topics are the topic filters the gateway subscribes to (and its IoT policy allows, exactly):
// the classic shadow's delta, its deletion and, with Config.Documents, its documents (to learn
// at once that a delta shrank or is gone: AWS publishes no delta then; refresh.go otherwise). A "+" matches one level, so the named shadows'
// topics ($aws/things/{thing}/shadow/name/…) are not matched.
var Topics = []string{
	"$aws/things/+/shadow/update/delta",
	"$aws/things/+/shadow/delete/accepted",
	DocumentsTopic,
}

// DocumentsTopic is subscribed to only with Config.Documents.
const DocumentsTopic = "$aws/things/+/shadow/update/documents"

// Config configures the downlink from AWS IoT.
type Config struct {
	// Endpoint is the account's AWS IoT data endpoint for MQTT, host[:port] (port 8883 by
	// default; on 443 the connection asks for ALPN x-amzn-mqtt-ca, as AWS IoT requires there).
	Endpoint string
	// ShadowEndpoint is the base URL for GetThingShadow (default https://<Endpoint's host>).
	ShadowEndpoint string
	// ClientID is the MQTT client id, the one the gateway's IoT policy allows to connect.
	ClientID string
	// CertFile, KeyFile: the gateway's X.509 certificate and key (PEM); CAFile the CA
	// certificates the endpoint's is checked against (empty: the system's).
	CertFile, KeyFile, CAFile string
	// CacheBytes bounds the delta cache (default 64 MiB; TestCacheEstimate).
	CacheBytes int64
	// FetchBudget is the longest a device's answer waits for its first GetThingShadow
	// (default 100ms; waitFetch).
	FetchBudget time.Duration
	// FetchRate is GetThingShadow calls started per second at most (default 50; AWS allows
	// 4,000 a second to an account).
	FetchRate float64
	// Documents subscribes to update/documents, to learn at once that a report cleared a delta
	// (one message per shadow update of the account to each gateway); without it a pending
	// delta is refreshed by GetThingShadow (refresh.go).
	Documents bool
}

// Downlink keeps the pending deltas of the things whose devices asked for them, from AWS IoT.
type Downlink struct {
	cfg    Config
	tls    *tls.Config
	get    shadowGetter
	log    *slog.Logger
	met    *metrics
	cache  *cache
	fetchq chan string
	ref    refresher
	// notifyq carries the names of things whose delta changed to the notifier.
	notifyq  chan string
	onChange func(name string)
	// The time Delta may still spend waiting for fetches (waitFetch).
	waitMu     sync.Mutex
	waitCredit time.Duration
	waitLast   time.Time
}

// New validates cfg and loads the certificate and key; it makes no connection. onChange is
// called (from one goroutine of Run, never blocking the MQTT client) when a thing's delta
// changed: the device API notifies its observers.
func New(cfg Config, awsCfg aws.Config, onChange func(name string), log *slog.Logger, reg prometheus.Registerer) (*Downlink, error) {
	if cfg.Endpoint == "" || cfg.ClientID == "" || cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("downlink from AWS IoT: the endpoint, client id, certificate and key are all needed")
	}
	if _, _, err := net.SplitHostPort(cfg.Endpoint); err != nil {
		cfg.Endpoint = net.JoinHostPort(cfg.Endpoint, "8883")
	}
	if cfg.ShadowEndpoint == "" {
		host, _, _ := net.SplitHostPort(cfg.Endpoint)
		cfg.ShadowEndpoint = "https://" + host
	}
	if cfg.CacheBytes <= 0 {
		cfg.CacheBytes = 64 << 20
	}
	if cfg.FetchBudget <= 0 {
		cfg.FetchBudget = 100 * time.Millisecond
	}
	if cfg.FetchRate == 0 {
		cfg.FetchRate = 50
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("downlink certificate: %w", err)
	}
	host, port, _ := net.SplitHostPort(cfg.Endpoint)
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, ServerName: host, MinVersion: tls.VersionTLS12}
	if port == "443" {
		// AWS IoT takes MQTT with a client certificate on 443 when the client asks for this
		// protocol (ALPN), so the gateways need no egress other than HTTPS.
		tc.NextProtos = []string{"x-amzn-mqtt-ca"}
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("downlink CA: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("downlink CA %s: no certificate", cfg.CAFile)
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	met := newMetrics(reg)
	return &Downlink{
		cfg: cfg, tls: tc, get: newDataPlane(cfg.ShadowEndpoint, awsCfg), log: log, met: met,
		cache: newCache(cfg.CacheBytes, cfg.FetchRate, met), waitCredit: cfg.FetchBudget,
		fetchq: make(chan string, 1024), notifyq: make(chan string, 1024), onChange: onChange,
		ref: refresher{due: map[string]time.Time{}},
	}, nil
}

// notify queues a notification of name's observers; a full queue drops it (counted).
func (d *Downlink) notify(name string) {
	if d.onChange == nil {
		return
	}
	select {
	case d.notifyq <- name:
	default:
		d.met.notifyDropped.Inc()
	}
}

// Run keeps the MQTT connection (reconnecting with backoff), runs the GetThingShadow workers
// and the notifier, until ctx ends; it returns nil then.
func (d *Downlink) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range fetchWorkers {
		wg.Go(func() { d.fetchLoop(ctx) })
	}
	wg.Go(func() { d.notifyLoop(ctx) })
	if !d.cfg.Documents {
		wg.Go(func() { d.refreshLoop(ctx) })
	}
	d.connectLoop(ctx)
	wg.Wait()
	return nil
}

// notifyLoop tells onChange of the things whose delta changed, until ctx ends.
func (d *Downlink) notifyLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case name := <-d.notifyq:
			d.onChange(name)
		}
	}
}

// connectLoop connects, subscribes and waits for the connection to be lost, again and again.
//
// Session: a persistent one (clean session off, a fixed client id, QoS 1 subscriptions).
// AWS IoT keeps it for an hour after a disconnect (the account's persistent session expiry)
// and delivers the messages published meanwhile when the gateway is back, so a short
// outage costs nothing and the cache stays right. When the broker says it has no session
// for us (CONNACK's session present flag off: first connect, or an expired session), messages
// may have been missed: the cache is emptied, and each device's next request asks
// GetThingShadow again.
func (d *Downlink) connectLoop(ctx context.Context) {
	backoff := time.Second
	for ctx.Err() == nil {
		lost := make(chan error, 1)
		opts := mqtt.NewClientOptions().
			AddBroker("tls://" + d.cfg.Endpoint).
			SetClientID(d.cfg.ClientID).
			SetTLSConfig(d.tls).
			SetCleanSession(false).
			SetAutoReconnect(false).
			SetConnectRetry(false).
			SetKeepAlive(60 * time.Second). // AWS IoT allows 30–1200 s
			SetConnectTimeout(30 * time.Second).
			SetOrderMatters(true). // handlers are quick: a map update and a queued notification
			SetDefaultPublishHandler(d.onMessage).
			SetConnectionLostHandler(func(_ mqtt.Client, err error) {
				select {
				case lost <- err:
				default:
				}
			})
		c := mqtt.NewClient(opts)
		tok := c.Connect()
		err := waitToken(ctx, tok)
		if err == nil {
			if !tok.(*mqtt.ConnectToken).SessionPresent() {
				d.cache.reset()
			}
			err = d.subscribe(ctx, c)
		}
		if err == nil {
			d.met.connects.Inc()
			d.met.connected.Set(1)
			d.log.Info("connected to AWS IoT for shadow deltas", "endpoint", d.cfg.Endpoint, "client_id", d.cfg.ClientID)
			backoff = time.Second
			select {
			case <-ctx.Done():
				c.Disconnect(250)
				d.met.connected.Set(0)
				return
			case err = <-lost:
			}
			d.met.connected.Set(0)
		} else {
			c.Disconnect(0)
		}
		if ctx.Err() != nil {
			return
		}
		d.met.lost.Inc()
		d.log.Warn("MQTT connection to AWS IoT down; deltas may be stale until it is back", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, time.Minute)
	}
}

func (d *Downlink) subscribe(ctx context.Context, c mqtt.Client) error {
	filters := make(map[string]byte, len(Topics))
	for _, t := range Topics {
		if t != DocumentsTopic || d.cfg.Documents {
			filters[t] = 1
		}
	}
	tok := c.SubscribeMultiple(filters, nil) // messages go to the default handler
	if err := waitToken(ctx, tok); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	for t, q := range tok.(*mqtt.SubscribeToken).Result() {
		if q == 0x80 {
			return fmt.Errorf("subscribe %s refused (is the policy missing it?)", t)
		}
	}
	return nil
}

func waitToken(ctx context.Context, tok mqtt.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *Downlink) onMessage(_ mqtt.Client, m mqtt.Message) { d.handle(m.Topic(), m.Payload()) }

// handle applies one shadow message to the cache.
func (d *Downlink) handle(topic string, payload []byte) {
	thing, op, ok := thingOf(topic)
	if !ok {
		d.met.messages.WithLabelValues("other", "ignored").Inc()
		return
	}
	var (
		version int64
		delta   map[string]any
		whole   bool
		err     error
		kind    string
	)
	switch op {
	case "update/delta":
		kind = "delta"
		version, delta, err = parseDelta(payload)
	case "update/documents":
		kind, whole = "documents", true
		version, delta, err = parseDocuments(payload)
	case "delete/accepted":
		kind, whole = "delete", true
		version, err = parseVersion(payload)
	default:
		d.met.messages.WithLabelValues("other", "ignored").Inc()
		return
	}
	if err != nil {
		d.met.messages.WithLabelValues(kind, "invalid").Inc()
		d.log.Warn("shadow message not understood", "topic", topic, "err", err, "payload", truncate(payload))
		return
	}
	outcome, changed := d.cache.apply(thing, version, delta, whole)
	d.met.messages.WithLabelValues(kind, outcome).Inc()
	if changed {
		d.notify(thing)
	}
}

func truncate(b []byte) string {
	s := string(b)
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
