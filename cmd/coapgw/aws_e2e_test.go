package main

// End-to-end test of the AWS pipeline: devices post over CoAP to the real gateway binary with
// --queue (moto's SQS), `coapgw process` applies the queue to moto's AWS IoT, and the thing, its
// type and its shadow are read back through the AWS SDK.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
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

// TestAWSOutageUnderLoad: with --ack-after=spool, cutting the gateway off from SQS in the middle of
// a load changes nothing for the devices (every request still gets 2.04) while the spool grows;
// when the link is back everything drains, and every acknowledged record is in its shadow.
func TestAWSOutageUnderLoad(t *testing.T) { outageUnderLoad(t, "coapgw-outage", nil) }

// TestAWSOutageUnderLoadFIFO is TestAWSOutageUnderLoad on a FIFO queue: the gateway sets one
// message group per thing and `coapgw process` writes shadows blindly in queue order, with no
// duplicate detection that could drop a late record.
func TestAWSOutageUnderLoadFIFO(t *testing.T) {
	outageUnderLoad(t, "coapgw-outage.fifo", map[string]string{"FifoQueue": "true"})
}

func outageUnderLoad(t *testing.T, queueName string, attrs map[string]string) {
	m := awstest.Start(t)
	awsEnv(t)
	queue := m.CreateQueue(t.Context(), queueName, attrs)
	proxy := m.NewProxy(t)
	w := startProcess(t, m, queue)
	g := startGW(t, t.TempDir(), "--queue", queue, "--aws-endpoint", proxy.Endpoint())
	t.Cleanup(func() { logGatewayOnFailure(t, g) })

	const devices, perDevice = 12, 60
	var mu sync.Mutex
	acked := make([][]int, devices)
	other := map[coapmsg.Code]int{}
	var wg sync.WaitGroup
	for d := 0; d < devices; d++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := coaptest.Dial(g.coap)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			for n := 0; n < perDevice; n++ {
				resp, err := c.Post(fmt.Sprintf("/outage/od-%d", d), fmt.Sprintf(`{"r%d":1}`, n))
				mu.Lock()
				switch {
				case err != nil:
					other[0]++
				case resp.Code == coapmsg.Changed:
					acked[d] = append(acked[d], n)
				default:
					other[resp.Code]++
				}
				mu.Unlock()
				time.Sleep(15 * time.Millisecond)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	proxy.Cut()
	time.Sleep(500 * time.Millisecond)
	var rd struct {
		Depth int64 `json:"spool_depth"`
	}
	getJSON(t, g, "/readyz", &rd)
	proxy.Restore()
	wg.Wait()
	if len(other) > 0 {
		t.Fatalf("devices got answers other than 2.04 during the outage: %v", other)
	}
	if rd.Depth == 0 {
		t.Fatal("the spool did not grow while SQS was unreachable")
	}
	total := 0
	for d := 0; d < devices; d++ {
		keys := make([]string, len(acked[d]))
		for i, n := range acked[d] {
			keys[i] = fmt.Sprintf("r%d", n)
		}
		w.waitKeys(fmt.Sprintf("od-%d", d), keys)
		total += len(acked[d])
	}
	t.Logf("%d records acknowledged (spool depth %d during the outage), lost 0", total, rd.Depth)
	g.stop(syscall.SIGTERM)
}

// processWorker is `coapgw process` applying a moto queue to moto's AWS IoT, in this process.
type processWorker struct {
	t      *testing.T
	http   string
	log    *syncBuffer
	reader *awsiot.Sink
}

// startProcess runs `coapgw process` on queue, with extra flags, until the test ends.
func startProcess(t *testing.T, m *awstest.Moto, queue string, extra ...string) *processWorker {
	t.Helper()
	w := &processWorker{t: t, http: fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t)), log: &syncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, append([]string{"process", "--queue", queue, "--sink", "awsiot", "--aws-endpoint", m.Endpoint(),
			"--http-addr", w.http, "--batch-wait", "50ms", "--wait-time", "1s"}, extra...), io.Discard, w.log)
	}()
	t.Cleanup(func() {
		cancel()
		<-code
	})
	var err error
	if w.reader, err = awsiot.New(awsiot.Config{}, m.AWSConfig(t.Context()), nil, nil); err != nil {
		t.Fatal(err)
	}
	return w
}

// waitKeys waits up to 90 s for thing's reported state to hold every key (one per acknowledged
// record); it fails the test with the shadow, the worker's log and metrics if some never come.
func (w *processWorker) waitKeys(thing string, keys []string) map[string]any {
	t := w.t
	t.Helper()
	var missing []string
	var got map[string]any
	for deadline := time.Now().Add(90 * time.Second); ; {
		s, _, _ := w.reader.Shadow(t.Context(), thing)
		got = nil
		_ = json.Unmarshal([]byte(s), &got)
		missing = missing[:0]
		for _, k := range keys {
			if _, ok := got[k]; !ok {
				missing = append(missing, k)
			}
		}
		if len(missing) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	s, v, err := w.reader.Shadow(t.Context(), thing)
	var metrics string
	for line := range strings.Lines(scrapeAddr(t, w.http)) {
		if strings.HasPrefix(line, "coapgw_") {
			metrics += line
		}
	}
	t.Fatalf("%s: %d acknowledged records never reached the shadow: %v\nshadow v%d %v: %s\nprocess log:\n%s\nprocess metrics:\n%s",
		thing, len(missing), missing, v, err, s, w.log, metrics)
	return nil
}

// TestAWSOutageFillsSpool (TESTPLAN E24): while SQS is unreachable the spool absorbs records up to
// its cap, every one acknowledged; then devices get 5.03 with Max-Age and nothing is stored for
// them. When the link is back the spool drains, the gateway acknowledges again without a restart,
// every acknowledged record reaches its shadow, and the refused ones never do.
func TestAWSOutageFillsSpool(t *testing.T) {
	m := awstest.Start(t)
	awsEnv(t)
	queue := m.CreateQueue(t.Context(), "coapgw-fill", nil)
	proxy := m.NewProxy(t)
	w := startProcess(t, m, queue)
	g := startGW(t, t.TempDir(), "--queue", queue, "--aws-endpoint", proxy.Endpoint(),
		"--spool-max-bytes", "131072", "--spool-segment-bytes", "65536")
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const devices = 3
	pad := strings.Repeat("x", 900)
	acked := make([][]string, devices)
	post := func(n int) coapmsg.Code {
		t.Helper()
		key := fmt.Sprintf("r%d", n)
		resp, err := c.Post(fmt.Sprintf("/fill/fd-%d", n%devices), fmt.Sprintf(`{%q:1,"pad":%q}`, key, pad))
		if err != nil {
			t.Fatalf("post %d: %v", n, err)
		}
		if resp.Code == coapmsg.Changed {
			acked[n%devices] = append(acked[n%devices], key)
		}
		return resp.Code
	}

	proxy.Cut()
	refused := -1
	for n := 0; n < 400 && refused < 0; n++ {
		switch code := post(n); code {
		case coapmsg.Changed:
		case coapmsg.ServiceUnavailable:
			refused = n
		default:
			t.Fatalf("post %d during the outage: %v, want 2.04 until the spool is full, then 5.03", n, code)
		}
	}
	if refused < 0 {
		t.Fatal("a 128 KiB spool never filled while SQS was unreachable")
	}
	// Still full (the cap is in bytes: a smaller record might still fit, one as large does not).
	resp, err := c.Post("/fill/fd-0", fmt.Sprintf(`{"late":1,"pad":%q}`, pad))
	if err != nil || resp.Code != coapmsg.ServiceUnavailable {
		t.Fatalf("post to a full spool: %v %+v", err, resp)
	}
	if v, ok := resp.Option(coapmsg.MaxAge); !ok || len(v) == 0 {
		t.Fatal("5.03 without Max-Age")
	}
	t.Logf("%d records acknowledged during the outage, the next refused", refused)

	proxy.Restore()
	var rd struct {
		Depth int64 `json:"spool_depth"`
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		if readyzJSON(t, g, &rd); rd.Depth == 0 { // 503 while the spool is full
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spool depth %d a minute after SQS came back", rd.Depth)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Room again, without a restart.
	for n := refused + 1; n < refused+1+devices; n++ {
		if code := post(n); code != coapmsg.Changed {
			t.Fatalf("post %d after the spool drained: %v", n, code)
		}
	}
	for d := range devices {
		got := w.waitKeys(fmt.Sprintf("fd-%d", d), acked[d])
		if _, ok := got[fmt.Sprintf("r%d", refused)]; ok {
			t.Errorf("fd-%d holds r%d, which was refused with 5.03", d, refused)
		}
		if _, ok := got["late"]; ok {
			t.Errorf("fd-%d holds a record refused with 5.03", d)
		}
	}
	g.stop(syscall.SIGTERM)
}

// TestAWSKill9 (TESTPLAN D20 on the AWS path): the gateway forwarding to SQS is killed with SIGKILL
// under load and restarted on the same spool, several times. Afterwards every acknowledged record
// is in its shadow, nothing that was never sent is, and the worker applied each record once:
// records the forwarder sent again after a kill (its cursor behind what SQS had accepted) are
// recognised as duplicates. Each record sets its own key, so the shadow shows which ones arrived.
func TestAWSKill9(t *testing.T) {
	m := awstest.Start(t)
	awsEnv(t)
	queue := m.CreateQueue(t.Context(), "coapgw-kill9", nil)
	w := startProcess(t, m, queue)
	dir := t.TempDir()
	const devices, rounds = 8, 3
	g, acked, sent := killLoad{devices: devices, perRound: 40, rounds: rounds, pause: 5 * time.Millisecond,
		path:    func(d int) string { return fmt.Sprintf("/k9/aws-k9-%d", d) },
		payload: func(n int) string { return fmt.Sprintf(`{"r%d":1}`, n) },
	}.run(t, func() *gw { return startGW(t, dir, "--queue", queue, "--aws-endpoint", m.Endpoint()) })
	totalAcked, keys := 0, 0
	for d := range devices {
		want := make([]string, 0, len(acked[d]))
		for n := range acked[d] {
			want = append(want, fmt.Sprintf("r%d", n))
		}
		got := w.waitKeys(fmt.Sprintf("aws-k9-%d", d), want)
		for k := range got {
			n, err := strconv.Atoi(strings.TrimPrefix(k, "r"))
			if err != nil || !sent[d][n] {
				t.Errorf("aws-k9-%d holds %q, which was never sent", d, k)
			}
		}
		totalAcked += len(acked[d])
		keys += len(got)
	}
	if totalAcked == 0 {
		t.Fatal("nothing acknowledged")
	}
	// Every record that reached a shadow was applied once, never twice; the rest of what came was
	// duplicates. (A record sent but not acknowledged may have been stored before the kill: it
	// counts too.) Applied may fall short of the keys only where an update's answer was lost and
	// the SDK's retry found the write already there (a duplicate by the sink's rules), so the
	// check is: no more applied than keys, and every key accounted for.
	var applied, dups float64
	for deadline := time.Now().Add(30 * time.Second); ; {
		metrics := scrapeAddr(t, w.http)
		applied = metricValue(t, metrics, `coapgw_processor_records_total{result="applied"}`)
		dups = metricValue(t, metrics, `coapgw_processor_records_total{result="duplicate"}`)
		if int(applied+dups) >= keys || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d rounds (%d kills): %d acknowledged, %d in the shadows, applied %v, duplicates %v",
		rounds, rounds-1, totalAcked, keys, applied, dups)
	if int(applied) > keys || int(applied+dups) < keys {
		t.Errorf("the worker applied %v records and found %v duplicates, but the shadows hold %d distinct ones", applied, dups, keys)
	}
	g.stop(syscall.SIGTERM)
}

// logGatewayOnFailure prints, when t failed, what the gateway knows of where its records went
// (the forwarder's and spool's metrics) and its log, so that a record that never reached its
// shadow can be told lost on the way to SQS from lost after it.
func logGatewayOnFailure(t *testing.T, g *gw) {
	if !t.Failed() {
		return
	}
	resp, err := http.Get("http://" + g.http + "/metrics")
	if err != nil {
		t.Logf("gateway metrics: %v", err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "coapgw_forward_") || strings.HasPrefix(l, "coapgw_spool_") || strings.HasPrefix(l, "coapgw_ingest_records_total") {
				lines = append(lines, l)
			}
		}
		t.Logf("gateway metrics:\n%s", strings.Join(lines, "\n"))
	}
	t.Logf("gateway log:\n%s", g.stderr.String())
}

// TestAWSFIFOReportedIsTheDevices: with a FIFO queue (the forwarder sets one message group per
// thing; `coapgw process` sees the .fifo URL and writes shadows in queue order), what a device
// POSTs is, byte for byte, all that GetThingShadow shows in state.reported: nothing of coapgw's.
// The thing's type is in its named shadow "coapgw".
func TestAWSFIFOReportedIsTheDevices(t *testing.T) { reportedIsTheDevices(t, true) }

// TestAWSStandardReportedIsTheDevices is TestAWSFIFOReportedIsTheDevices on a standard queue
// (versioned writes): state.reported is the device's too; the type and coapgw's per-property
// times are in the named shadow "coapgw".
func TestAWSStandardReportedIsTheDevices(t *testing.T) { reportedIsTheDevices(t, false) }

func reportedIsTheDevices(t *testing.T, fifo bool) {
	m := awstest.Start(t)
	awsEnv(t)
	var queue string
	if fifo {
		queue = m.CreateQueue(t.Context(), "coapgw-e2e.fifo", map[string]string{"FifoQueue": "true"})
	} else {
		queue = m.CreateQueue(t.Context(), "coapgw-e2e", nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"process", "--queue", queue, "--aws-endpoint", m.Endpoint(),
			"--http-addr", fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t)), "--batch-wait", "50ms", "--wait-time", "1s"}, io.Discard, os.Stderr)
	}()
	defer func() {
		cancel()
		if c := <-code; c != 0 {
			t.Errorf("coapgw process exited %d", c)
		}
	}()
	g := startGW(t, t.TempDir(), "--queue", queue, "--aws-endpoint", m.Endpoint())
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range []string{`{"bat":3.3,"temp":18.5}`, `{"temp":19.5,"pos":{"lat":1,"lon":2}}`, `{"bat":3.1,"pos":{"lat":null}}`} {
		if resp, err := c.Post("/meter/m-1", p); err != nil || resp.Code != coapmsg.Changed {
			t.Fatalf("post %s: %v %+v", p, err, resp)
		}
	}
	get := func(query string) (map[string]any, error) {
		// moto routes by the service in the signature's scope; it does not check the signature.
		req, _ := http.NewRequest(http.MethodGet, m.Endpoint()+"/things/m-1/shadow"+query, nil)
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=test/20260101/"+awstest.Region+"/iotdata/aws4_request, SignedHeaders=host, Signature=0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var doc struct {
			State struct {
				Reported map[string]any `json:"reported"`
			} `json:"state"`
		}
		err = json.NewDecoder(resp.Body).Decode(&doc)
		return doc.State.Reported, err
	}
	const want = `{"bat":3.1,"pos":{"lon":2},"temp":19.5}`
	for deadline := time.Now().Add(60 * time.Second); ; {
		r, err := get("")
		b, _ := json.Marshal(r)
		if err == nil && string(b) == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state.reported = %s (%v), want exactly %s", b, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The registry shadow is written after the classic one (on a standard queue, right after
	// each conditional write): wait for it too.
	for deadline := time.Now().Add(60 * time.Second); ; {
		r, err := get("?name=" + awsiot.RegistryShadow)
		if err == nil && r["type"] == "meter" && (!fifo || fmt.Sprint(r) == "map[type:meter]") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry shadow reported = %v (%v)", r, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}
}
