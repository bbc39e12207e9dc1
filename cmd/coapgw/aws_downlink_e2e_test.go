package main

// End-to-end test of the downlink from AWS IoT: the real gateway binary with --queue (moto's
// SQS) and --iot-downlink-endpoint (mosquitto with TLS and client certificates, standing in for
// AWS IoT's MQTT endpoint), `coapgw process` applying the queue to moto's shadows, and libcoap's
// coap-client as the device. The test plays AWS IoT's part that moto lacks: it publishes on
// mosquitto the update/delta and update/documents messages AWS IoT publishes on a shadow update,
// in AWS's format.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/coapgw/coapgw/internal/awstest"
	"github.com/coapgw/coapgw/internal/mqtttest"
)

// motoShadow calls moto's IoT data plane (GetThingShadow with a nil body, UpdateThingShadow
// with one), signed as the SDK signs; it returns the document, nil when there is no shadow.
func motoShadow(t *testing.T, m *awstest.Moto, thing string, body []byte) []byte {
	t.Helper()
	method := http.MethodGet
	if body != nil {
		method = http.MethodPost
	}
	req, err := http.NewRequestWithContext(t.Context(), method, m.Endpoint()+"/things/"+thing+"/shadow", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	cfg := m.AWSConfig(t.Context())
	creds, err := cfg.Credentials.Retrieve(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(t.Context(), creds, req, hex.EncodeToString(sum[:]), "iotdata", cfg.Region, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNotFound && body == nil {
		return nil // no shadow yet
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s shadow of %s: %d %s", method, thing, resp.StatusCode, b)
	}
	return b
}

// shadowVersion is a shadow document's version.
func shadowVersion(t *testing.T, doc []byte) int64 {
	t.Helper()
	var d struct{ Version int64 }
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatalf("shadow %s: %v", doc, err)
	}
	return d.Version
}

// TestAWSDownlink: a delta set in AWS IoT while the gateway was down reaches the device in the
// 2.04 of its first report after the start (one GetThingShadow); a delta published on the MQTT
// endpoint reaches it in the next 2.04 and as an Observe notification; the device reporting the
// desired values clears it (the worker updates the shadow, AWS publishes update/documents; or,
// without the documents subscription, the gateway reads the shadow again).
func TestAWSDownlink(t *testing.T) {
	bin := coapClient(t)
	m := awstest.Start(t)
	awsEnv(t)
	broker := mqtttest.Start(t)
	queue := m.CreateQueue(t.Context(), "coapgw-downlink", nil)

	// The worker applies the queue to moto's AWS IoT, as in production.
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"process", "--queue", queue, "--sink", "awsiot", "--aws-endpoint", m.Endpoint(),
			"--http-addr", fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t)), "--batch-wait", "50ms", "--wait-time", "1s"}, io.Discard, os.Stderr)
	}()
	defer func() {
		cancel()
		if c := <-code; c != 0 {
			t.Errorf("coapgw process exited %d", c)
		}
	}()

	dir := t.TempDir()
	args := []string{"--queue", queue, "--aws-endpoint", m.Endpoint(),
		"--iot-downlink-endpoint", broker.Addr(), "--iot-downlink-cert-file", broker.CertFile,
		"--iot-downlink-key-file", broker.KeyFile, "--iot-downlink-ca-file", broker.CAFile,
		"--iot-downlink-fetch-budget", "2s", "--iot-downlink-documents"}
	// connected waits for a gateway's MQTT connection: until then its cache is emptied when the
	// connection comes up (a new session), and the test wants each path taken on purpose.
	connected := func(g *gw) {
		t.Helper()
		waitFor(t, "the MQTT connection", func() bool {
			return strings.Contains(scrape(t, g), "coapgw_downlink_aws_mqtt_connected 1\n")
		})
	}
	g := startGW(t, dir, args...)
	connected(g)
	post := func(g *gw, payload string) string {
		t.Helper()
		out, err := exec.Command(bin, "-m", "post", "-t", "50", "-A", "50", "-e", payload, "coap://"+g.coap.String()+"/sensor/dev-1").CombinedOutput()
		if err != nil {
			t.Fatalf("coap-client post: %v %q\n%s", err, out, g.stderr)
		}
		return strings.TrimSpace(string(out))
	}
	// reported waits until the shadow's reported section has the property at the JSON value.
	reported := func(prop, value string) {
		t.Helper()
		waitFor(t, "reported "+prop+" "+value, func() bool {
			var d struct {
				State struct{ Reported map[string]json.RawMessage }
			}
			doc := motoShadow(t, m, "dev-1", nil)
			var v bytes.Buffer
			return doc != nil && json.Unmarshal(doc, &d) == nil && json.Compact(&v, d.State.Reported[prop]) == nil && v.String() == value
		})
	}
	if out := post(g, `{"interval":30,"temp":20}`); out != "" {
		t.Fatalf("answer without desired state: %q", out)
	}
	reported("interval", "30")

	// Desired state set while the gateway is down.
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("stop: %v\n%s", err, g.stderr)
	}
	v := shadowVersion(t, motoShadow(t, m, "dev-1", []byte(`{"state":{"desired":{"interval":60}}}`)))
	g = startGW(t, dir, args...)
	connected(g)
	want := fmt.Sprintf(`{"state":{"interval":60},"version":%d}`, v)
	if out := post(g, `{"temp":21}`); out != want {
		t.Fatalf("first report after the start: %q, want %s\n%s", out, want, g.stderr)
	}
	metrics := scrape(t, g)
	if n := metricValue(t, metrics, `coapgw_downlink_aws_fetches_total{outcome="ok"}`); n != 1 {
		t.Fatalf("GetThingShadow calls %v, want 1", n)
	}

	// An observer, then a desired change published as AWS IoT publishes it.
	obs := exec.Command(bin, "-s", "10", "-m", "get", "coap://"+g.coap.String()+"/sensor/dev-1")
	var obsOut syncBuffer
	obs.Stdout, obs.Stderr = &obsOut, &obsOut
	if err := obs.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- obs.Wait() }()
	t.Cleanup(func() {
		if obs.ProcessState == nil {
			obs.Process.Kill()
			<-done
		}
	})
	waitFor(t, "the observer to register", func() bool { return metricValue(t, scrape(t, g), "coapgw_coap_observers") == 1 })
	previous := motoShadow(t, m, "dev-1", nil)
	v = shadowVersion(t, motoShadow(t, m, "dev-1", []byte(`{"state":{"desired":{"fw":{"channel":"beta"}}}}`)))
	now := time.Now().Unix()
	broker.Publish("$aws/things/dev-1/shadow/update/delta", fmt.Appendf(nil,
		`{"version":%d,"timestamp":%d,"state":{"fw":{"channel":"beta"}},"metadata":{"fw":{"channel":{"timestamp":%d}}},"clientToken":"console"}`, v, now, now))
	pending := fmt.Sprintf(`{"state":{"fw":{"channel":"beta"},"interval":60},"version":%d}`, v)
	waitFor(t, "the delta message to be applied", func() bool {
		return strings.Contains(scrape(t, g), `coapgw_downlink_aws_messages_total{outcome="applied",topic="delta"} 1`+"\n")
	})
	if out := post(g, `{"temp":22}`); out != pending {
		t.Fatalf("report after the delta message: %q, want %s", out, pending)
	}

	// The device applies it and reports: the worker updates the shadow, AWS IoT publishes the
	// documents (and no delta, the delta being empty).
	post(g, `{"interval":60,"fw":{"channel":"beta"}}`)
	reported("fw", `{"channel":"beta"}`)
	reported("interval", "60")
	current := motoShadow(t, m, "dev-1", nil)
	if strings.Contains(string(current), `"delta"`) {
		t.Fatalf("moto's shadow still has a delta: %s", current)
	}
	broker.Publish("$aws/things/dev-1/shadow/update/documents", fmt.Appendf(nil,
		`{"previous":%s,"current":%s,"timestamp":%d,"clientToken":"coapgw"}`, previous, current, time.Now().Unix()))
	waitFor(t, "the documents message to be applied", func() bool {
		return strings.Contains(scrape(t, g), `coapgw_downlink_aws_messages_total{outcome="applied",topic="documents"} 1`+"\n")
	})
	if out := post(g, `{"temp":23}`); out != "" {
		t.Fatalf("report after the delta was cleared: %q", out)
	}
	if err := <-done; err != nil {
		t.Fatalf("coap-client observing: %v %q", err, obsOut.String())
	}
	// The observer saw the state at registration, the notification of the published delta,
	// and the one of the delta cleared.
	// (libcoap's client prints the payloads one after the other.)
	if got, all := obsOut.String(), want+pending+`{"state":{}}`; strings.TrimSpace(got) != all {
		t.Fatalf("observer printed %q, want %q: the state at registration, the delta published, the delta cleared", got, all)
	}
	if n := metricValue(t, scrape(t, g), `coapgw_downlink_aws_fetches_total{outcome="ok"}`); n != 1 {
		t.Fatalf("GetThingShadow calls %v after the messages, want still 1", n)
	}

	// Without --iot-downlink-documents (the default), a gateway learns that the report cleared
	// the delta by reading the shadow again (10s after a request while the delta is pending).
	g2 := startGW(t, t.TempDir(), append(args[:len(args)-1], "--iot-downlink-client-id", "coapgw-refresh")...)
	connected(g2)
	motoShadow(t, m, "dev-1", []byte(`{"state":{"desired":{"mode":"eco"}}}`))
	if out := post(g2, `{"temp":24}`); !strings.HasPrefix(out, `{"state":{"mode":"eco"},"version":`) {
		t.Fatalf("first report to the second gateway: %q", out)
	}
	post(g2, `{"mode":"eco"}`)
	reported("mode", `"eco"`)
	start := time.Now()
	for out := post(g2, `{"temp":25}`); out != ""; out = post(g2, `{"temp":25}`) {
		if time.Since(start) > 45*time.Second {
			t.Fatalf("the delta is still in the answers %v after the report: %q\n%s", time.Since(start), out, scrape(t, g2))
		}
		time.Sleep(time.Second)
	}
	if n := metricValue(t, scrape(t, g2), `coapgw_downlink_aws_refreshes_total{outcome="ok"}`); n < 1 {
		t.Fatalf("refreshes %v", n)
	}
}
