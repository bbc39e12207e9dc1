package main

// End-to-end tests of the drop-in replacement for the 2018 CoAP-to-AWS-IoT ingestor
// (docs/migrate-from-2018.md): its example device (node-coap) against the real gateway binary
// with and without --compat seed; the gateway with --envelope seed feeding a Python consumer
// written to the 2018 message shape (moto's SQS); `coapgw process` applying a queue holding both
// shapes, with and without --seed-shadow (moto's AWS IoT).

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/coapgw/coapgw/internal/awstest"
	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
	"github.com/coapgw/coapgw/internal/envelope"
	"github.com/coapgw/coapgw/internal/httpapitest"
	"github.com/coapgw/coapgw/internal/record"
)

// nodeCoAPVersion is the node-coap release scripts/test.sh installs.
const nodeCoAPVersion = "1.5.0"

// nodeCoAP returns node and the node_modules holding node-coap (COAPGW_NODE_COAP, default
// scripts/test.sh's cache directory), failing under COAPGW_REQUIRE_PEERS and skipping otherwise
// when either is missing.
func nodeCoAP(t *testing.T) (node, modules string) {
	t.Helper()
	node = lookPeer(t, "node")
	dir := os.Getenv("COAPGW_NODE_COAP")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(cache, "coapgw", "node-coap-"+nodeCoAPVersion)
	}
	modules = filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(modules, "coap", "package.json")); err != nil {
		msg := fmt.Sprintf("node-coap not installed in %s (scripts/test.sh: npm install --prefix %s coap@%s)", dir, dir, nodeCoAPVersion)
		if httpapitest.RequirePeers() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return node, modules
}

// seedDevice runs the 2018 example device (testdata/seed-device.js) against addr and returns
// what it printed: the answer's code and payload.
func seedDevice(t *testing.T, node, modules, addr string, metric int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "testdata/seed-device.js", addr, fmt.Sprint(metric))
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node seed-device.js: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestSeedDeviceNodeCoAP: the 2018 example device — node-coap's default GET with its JSON
// written into the request — gets 2.04 RECEIVED OK from a gateway with --compat seed, and its
// record is stored exactly as a POST's; a gateway without it answers 4.05 and stores nothing.
func TestSeedDeviceNodeCoAP(t *testing.T) {
	node, modules := nodeCoAP(t)

	dir := t.TempDir()
	g := startGW(t, dir, "--compat", "seed")
	if got := seedDevice(t, node, modules, g.coap.String(), 7); got != "2.04 RECEIVED OK" {
		t.Fatalf("compat seed: the device printed %q, want \"2.04 RECEIVED OK\"\n%s", got, g.stderr)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}
	recs := spoolRecords(t, dir)
	if len(recs) != 1 || recs[0].Type != "x-node" || recs[0].ID != "xxxx-ssss-1111-2222" || string(recs[0].Payload) != `{"metric1":7,"metric2":19}` {
		t.Fatalf("compat seed: spooled %+v", recs)
	}

	dir = t.TempDir()
	g = startGW(t, dir)
	if got := seedDevice(t, node, modules, g.coap.String(), 8); got != "4.05" {
		t.Fatalf("compat off: the device printed %q, want \"4.05\" (Method Not Allowed, no payload)", got)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}
	if recs := spoolRecords(t, dir); len(recs) != 0 {
		t.Fatalf("compat off: spooled %+v, want nothing", recs)
	}
}

// seedMessage is a line of testdata/seed_consumer.py's output.
type seedMessage struct {
	Type       string         `json:"type"`
	Thing      string         `json:"thing"`
	Properties map[string]any `json:"properties"`
	IP         string         `json:"ip"`
	Method     string         `json:"method"`
	Timestamp  int64          `json:"timestamp"`
	Error      string         `json:"error"`
	Body       string         `json:"body"`
}

// TestSeedEnvelopeOldConsumer: a gateway with --envelope seed (and --compat seed) puts on SQS
// messages that a consumer written to the 2018 message shape, in Python with boto3, reads: the
// exact keys and types, the thing from the path, the properties from the payload string. A CBOR
// payload, which that message cannot carry, is refused with 4.15 before it is stored.
func TestSeedEnvelopeOldConsumer(t *testing.T) {
	m := awstest.Start(t)
	awsEnv(t)
	queue := m.CreateQueue(t.Context(), "coapgw-seed", nil)
	start := time.Now().Unix()
	g := startGW(t, t.TempDir(), "--queue", queue, "--aws-endpoint", m.Endpoint(), "--envelope", "seed", "--compat", "seed")
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	get := c.Request(coapmsg.Confirmable, coapmsg.GET, "/x-node/dev-get", []byte(`{"metric1":5,"s":"a \"q\" é"}`))
	if resp, err := c.Do(get); err != nil || resp.Code != coapmsg.Changed || string(resp.Payload) != "RECEIVED OK" {
		t.Fatalf("GET with payload: %v %+v", err, resp)
	}
	if resp, err := c.Post("/x-node/dev-post", `{"metric2":6}`); err != nil || resp.Code != coapmsg.Changed || string(resp.Payload) != "RECEIVED OK" {
		t.Fatalf("POST: %v %+v", err, resp)
	}
	cbor := c.Request(coapmsg.Confirmable, coapmsg.POST, "/x-node/dev-cbor", []byte{0xa1, 0x61, 0x61, 0x01},
		coapmsg.Option{Number: coapmsg.ContentFormat, Value: []byte{60}})
	if resp, err := c.Do(cbor); err != nil || resp.Code != coapmsg.UnsupportedFormat || string(resp.Payload) != "FAILURE" {
		t.Fatalf("CBOR: %v %+v, want 4.15 FAILURE", err, resp)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "python3", "testdata/seed_consumer.py", queue, m.Endpoint(), "2", "60").Output()
	if err != nil {
		t.Fatalf("seed_consumer.py: %v\n%s", err, exitStderr(err))
	}
	got := map[string]seedMessage{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		var msg seedMessage
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil || msg.Error != "" {
			t.Fatalf("consumer line %q: %v", sc.Text(), err)
		}
		got[msg.Thing] = msg
	}
	want := map[string]map[string]any{"dev-get": {"metric1": 5.0, "s": `a "q" é`}, "dev-post": {"metric2": 6.0}}
	if len(got) != len(want) {
		t.Fatalf("consumer read %d things, want %d:\n%s\ngateway:\n%s", len(got), len(want), out, g.stderr)
	}
	for thing, props := range want {
		msg := got[thing]
		if msg.Type != "x-node" || fmt.Sprint(msg.Properties) != fmt.Sprint(props) || msg.IP != "127.0.0.1" ||
			msg.Timestamp < start || msg.Timestamp > time.Now().Unix() || msg.Method != "POST" {
			t.Errorf("%s: %+v, want type x-node, properties %v, ip 127.0.0.1, a timestamp since %d", thing, msg, props, start)
		}
	}
}

// exitStderr is the stderr an *exec.ExitError kept, if any.
func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// TestSeedProcessBothShapes: `coapgw process` applies a queue holding a message of the 2018
// ingestor (as it wrote it: a GET, a query in the path) and a coapgw envelope. With
// --seed-shadow both shadows get online "true", uuid and type, the thing type's description is
// its name and the new thing has FirstSeen (RFC 3339); without it, on another queue, the
// shadows are the devices' keys only, and types and things carry nothing more.
func TestSeedProcessBothShapes(t *testing.T) {
	m := awstest.Start(t)
	awsEnv(t)
	ctx := t.Context()
	sqs := awssqs.NewFromConfig(m.AWSConfig(ctx))
	iotc := iot.NewFromConfig(m.AWSConfig(ctx))
	now := time.Now().UTC().Truncate(time.Second)
	send := func(queue string, bodies ...string) {
		t.Helper()
		for _, b := range bodies {
			if _, err := sqs.SendMessage(ctx, &awssqs.SendMessageInput{QueueUrl: &queue, MessageBody: aws.String(b)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	bodies := func(suffix string) []string {
		old := fmt.Sprintf(`{"timestamp":%d,"ip":"198.51.100.4","path":"/x-node%s/old%s?v=1","method":"GET","payload":"{\"metric1\":7,\"metric2\":19}"}`,
			now.Unix(), suffix, suffix)
		env, err := envelope.Encode(record.Record{GW: "gw-1", Seq: 1, ReceivedAt: now, Type: "sensor" + suffix, ID: "new" + suffix,
			ContentFormat: record.FormatJSON, Peer: "192.0.2.1:5683", Payload: []byte(`{"temp":21.5}`)})
		if err != nil {
			t.Fatal(err)
		}
		return []string{old, env}
	}
	describe := func(thing, typ string) (attrs map[string]string, description string) {
		t.Helper()
		d, err := iotc.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: &thing})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(d.ThingTypeName) != typ {
			t.Errorf("%s has type %q, want %q", thing, aws.ToString(d.ThingTypeName), typ)
		}
		tt, err := iotc.DescribeThingType(ctx, &iot.DescribeThingTypeInput{ThingTypeName: &typ})
		if err != nil {
			t.Fatal(err)
		}
		if tt.ThingTypeProperties != nil {
			description = aws.ToString(tt.ThingTypeProperties.ThingTypeDescription)
		}
		return d.Attributes, description
	}

	seedQ := m.CreateQueue(ctx, "coapgw-seed-shadow", nil)
	send(seedQ, bodies("")...)
	w := startProcess(t, m, seedQ, "--seed-shadow")
	for thing, want := range map[string]map[string]any{
		"old": {"metric1": 7.0, "metric2": 19.0, "online": "true", "uuid": "old", "type": "x-node"},
		"new": {"temp": 21.5, "online": "true", "uuid": "new", "type": "sensor"},
	} {
		var keys []string
		for k := range want {
			keys = append(keys, k)
		}
		got := w.waitKeys(thing, keys)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("--seed-shadow: %s reported %v, want %v", thing, got, want)
		}
	}
	for thing, typ := range map[string]string{"old": "x-node", "new": "sensor"} {
		attrs, desc := describe(thing, typ)
		if desc != typ {
			t.Errorf("--seed-shadow: type %s has description %q, want its name", typ, desc)
		}
		first, err := time.Parse(time.RFC3339, attrs["FirstSeen"])
		if err != nil || len(attrs) != 1 || first.Before(now.Add(-time.Minute)) || first.After(time.Now().Add(time.Minute)) {
			t.Errorf("--seed-shadow: %s attributes %v, want FirstSeen, the time it was created (RFC 3339)", thing, attrs)
		}
	}

	plainQ := m.CreateQueue(ctx, "coapgw-plain", nil)
	send(plainQ, bodies("-plain")...)
	w = startProcess(t, m, plainQ)
	for thing, want := range map[string]string{"old-plain": `{"metric1":7,"metric2":19}`, "new-plain": `{"temp":21.5}`} {
		deadline := time.Now().Add(60 * time.Second)
		for {
			s, _, err := w.reader.Shadow(ctx, thing)
			if err == nil && s == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("without --seed-shadow: %s reported %s (%v), want %s\n%s", thing, s, err, want, w.log)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for thing, typ := range map[string]string{"old-plain": "x-node-plain", "new-plain": "sensor-plain"} {
		if attrs, desc := describe(thing, typ); len(attrs) != 0 || desc != "" {
			t.Errorf("without --seed-shadow: %s attributes %v, type description %q, want none", thing, attrs, desc)
		}
	}
}

// TestSeedShadowLocal: in local mode --seed-shadow puts the 2018 keys into the registry's
// shadow as well (after a GET with a payload, under --compat seed); without it the shadow is
// the device's keys only.
func TestSeedShadowLocal(t *testing.T) {
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--seed-shadow"}, `{"metric1":3,"online":"true","type":"x-node","uuid":"dev-9"}`},
		{nil, `{"metric1":3}`},
	} {
		g := startGW(t, t.TempDir(), append([]string{"--process", "local", "--compat", "seed"}, c.flags...)...)
		cl, err := coaptest.Dial(g.coap)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := cl.Do(cl.Request(coapmsg.Confirmable, coapmsg.GET, "/x-node/dev-9", []byte(`{"metric1":3}`)))
		cl.Close()
		if err != nil || resp.Code != coapmsg.Changed || string(resp.Payload) != "RECEIVED OK" {
			t.Fatalf("%v: GET with payload: %v %+v", c.flags, err, resp)
		}
		var got string
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			var sh struct {
				State struct {
					Reported json.RawMessage `json:"reported"`
				} `json:"state"`
			}
			if r, err := http.Get("http://" + g.http + "/api/things/dev-9/shadow"); err == nil {
				_ = json.NewDecoder(r.Body).Decode(&sh)
				r.Body.Close()
			}
			if got = string(sh.State.Reported); got == c.want {
				break
			}
		}
		if got != c.want {
			t.Errorf("%v: reported %s, want %s", c.flags, got, c.want)
		}
		if err := g.stop(syscall.SIGTERM); err != nil {
			t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
		}
	}
}
