package awsdownlink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/coapgw/coapgw/internal/mqtttest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeShadows answers GetThingShadow from a map; a thing in block waits until released.
type fakeShadows struct {
	mu     sync.Mutex
	docs   map[string]string
	block  map[string]chan struct{}
	calls  map[string]int
	failOn string
}

func (f *fakeShadows) GetThingShadow(ctx context.Context, thing string) ([]byte, bool, error) {
	f.mu.Lock()
	f.calls[thing]++
	doc, ok := f.docs[thing]
	ch := f.block[thing]
	f.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	if thing == f.failOn {
		return nil, false, errors.New("throttled")
	}
	return []byte(doc), ok, nil
}

func (f *fakeShadows) count(thing string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[thing]
}

// newTest is a Downlink with the fake shadows and its workers running (no MQTT).
func newTest(t *testing.T, cfg Config, f *fakeShadows) (*Downlink, chan string, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	changed := make(chan string, 16)
	if cfg.FetchBudget == 0 {
		cfg.FetchBudget = 5 * time.Second
	}
	if cfg.CacheBytes == 0 {
		cfg.CacheBytes = 1 << 20
	}
	if cfg.FetchRate == 0 {
		cfg.FetchRate = 1000
	}
	met := newMetrics(reg)
	d := &Downlink{cfg: cfg, waitCredit: cfg.FetchBudget, get: f, log: slog.New(slog.DiscardHandler), met: met, cache: newCache(cfg.CacheBytes, cfg.FetchRate, met),
		fetchq: make(chan string, 16), notifyq: make(chan string, 16), ref: refresher{due: map[string]time.Time{}}, onChange: func(n string) {
			select {
			case changed <- n:
			default:
			}
		}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { d.fetchLoop(ctx) })
	wg.Go(func() { d.notifyLoop(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return d, changed, reg
}

func newFake() *fakeShadows {
	return &fakeShadows{docs: map[string]string{}, block: map[string]chan struct{}{}, calls: map[string]int{}}
}

// TestFirstContactFetchesOnce: a thing's first request calls GetThingShadow once and gets the
// delta set before (as while the gateway was down); later requests are answered from the cache.
func TestFirstContactFetchesOnce(t *testing.T) {
	f := newFake()
	f.docs["dev-1"] = awsShadow
	d, _, reg := newTest(t, Config{}, f)
	for range 3 {
		if got := string(d.Delta([]byte("dev-1"))); got != `{"state":{"interval":60},"version":12}` {
			t.Fatalf("Delta = %q", got)
		}
	}
	if got := d.Delta([]byte("no-shadow")); got != nil {
		t.Fatalf("a thing without a shadow: %q", got)
	}
	d.Delta([]byte("no-shadow"))
	if f.count("dev-1") != 1 || f.count("no-shadow") != 1 {
		t.Fatalf("GetThingShadow calls %v, want one per thing", f.calls)
	}
	if n := testutil.ToFloat64(d.met.fetches.WithLabelValues("ok")); n != 2 {
		t.Fatalf("fetches ok = %v", n)
	}
	if n := testutil.ToFloat64(d.met.pending); n != 1 {
		t.Fatalf("pending deltas %v", n)
	}
	_ = reg
}

// TestDeltaDoesNotAllocate: for a known thing, Delta is a lookup without allocation (the device
// API calls it on the telemetry path), with a pending delta (its refresh already scheduled) or
// without one.
func TestDeltaDoesNotAllocate(t *testing.T) {
	f := newFake()
	f.docs["dev-1"] = awsShadow
	d, _, _ := newTest(t, Config{}, f)
	for _, name := range [][]byte{[]byte("dev-1"), []byte("no-shadow")} {
		d.Delta(name)
		d.Delta(name)
		if n := testing.AllocsPerRun(100, func() { d.Delta(name) }); n != 0 {
			t.Errorf("Delta(%s): %v allocations", name, n)
		}
	}
}

// TestMaxAge: an entry older than maxAge is asked for again on the device's next request.
func TestMaxAge(t *testing.T) {
	f := newFake()
	f.docs["dev-1"] = awsShadow
	d, _, _ := newTest(t, Config{}, f)
	d.Delta([]byte("dev-1"))
	d.cache.mu.Lock()
	d.cache.m["dev-1"].checked -= int64(maxAge + time.Minute)
	d.cache.mu.Unlock()
	f.mu.Lock()
	f.docs["dev-1"] = `{"state":{"desired":{"interval":90},"reported":{"interval":60},"delta":{"interval":90}},"version":20}`
	f.mu.Unlock()
	if got := string(d.Delta([]byte("dev-1"))); got != `{"state":{"interval":90},"version":20}` || f.count("dev-1") != 2 {
		t.Fatalf("after maxAge: %q, %d calls", got, f.count("dev-1"))
	}
	d.Delta([]byte("dev-1"))
	if f.count("dev-1") != 2 {
		t.Fatalf("%d calls: a fresh entry was asked for again", f.count("dev-1"))
	}
}

// TestSlowFetchDoesNotHoldTheAnswer: a GetThingShadow slower than the budget leaves the first
// answer without the delta; when the call returns, observers are notified and the next answer
// carries it.
func TestSlowFetchDoesNotHoldTheAnswer(t *testing.T) {
	f := newFake()
	f.docs["dev-1"] = awsShadow
	release := make(chan struct{})
	f.block["dev-1"] = release
	d, changed, _ := newTest(t, Config{FetchBudget: 20 * time.Millisecond}, f)
	if got := d.Delta([]byte("dev-1")); got != nil {
		t.Fatalf("answer while GetThingShadow is slow: %q", got)
	}
	if n := testutil.ToFloat64(d.met.waits.WithLabelValues("late")); n != 1 {
		t.Fatalf("late = %v", n)
	}
	close(release)
	select {
	case n := <-changed:
		if n != "dev-1" {
			t.Fatalf("notified %q", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification when the slow call returned")
	}
	if got := string(d.Delta([]byte("dev-1"))); !strings.Contains(got, `"interval":60`) {
		t.Fatalf("next answer %q", got)
	}
	if f.count("dev-1") != 1 {
		t.Fatalf("calls %d", f.count("dev-1"))
	}
}

// TestWaitShare: waits for slow calls take at most their share of the time: right after one
// request waited its whole budget, the next first request does not wait at all.
func TestWaitShare(t *testing.T) {
	f := newFake()
	release := make(chan struct{})
	defer close(release)
	f.block["dev-1"], f.block["dev-2"] = release, release
	d, _, _ := newTest(t, Config{FetchBudget: 20 * time.Millisecond}, f)
	d.Delta([]byte("dev-1"))
	d.Delta([]byte("dev-2"))
	if late, skipped := testutil.ToFloat64(d.met.waits.WithLabelValues("late")), testutil.ToFloat64(d.met.waits.WithLabelValues("skipped")); late != 1 || skipped != 1 {
		t.Fatalf("late %v skipped %v, want 1 and 1", late, skipped)
	}
}

// TestFetchRateLimit: beyond the rate, a first request makes no call (counted) and is tried
// again on the next request; a failed call too.
func TestFetchRateLimit(t *testing.T) {
	f := newFake()
	f.failOn = "dev-bad"
	d, _, _ := newTest(t, Config{FetchRate: 1}, f)
	d.Delta([]byte("dev-1"))
	d.Delta([]byte("dev-2"))
	if n := testutil.ToFloat64(d.met.fetches.WithLabelValues("rate_limited")); n != 1 || f.count("dev-2") != 0 {
		t.Fatalf("rate_limited %v, dev-2 calls %d", n, f.count("dev-2"))
	}
	d2, _, _ := newTest(t, Config{}, f)
	d2.Delta([]byte("dev-bad"))
	d2.Delta([]byte("dev-bad"))
	if n := testutil.ToFloat64(d2.met.fetches.WithLabelValues("error")); n != 2 || f.count("dev-bad") != 2 {
		t.Fatalf("errors %v calls %d: a failed call must be tried again", n, f.count("dev-bad"))
	}
}

// TestMessagesByVersion: delta messages merge, documents replace, older versions are dropped,
// things no device asked about are not cached, a deleted shadow has no delta.
func TestMessagesByVersion(t *testing.T) {
	f := newFake()
	f.docs["dev-1"] = awsShadow // version 12, delta {"interval":60}
	d, changed, _ := newTest(t, Config{}, f)
	d.Delta([]byte("dev-1"))
	drain := func() int {
		n := 0
		for {
			select {
			case <-changed:
				n++
			case <-time.After(50 * time.Millisecond):
				return n
			}
		}
	}
	drain()
	msg := func() string { return string(d.Delta([]byte("dev-1"))) }
	const topic = "$aws/things/dev-1/shadow/update/"
	documents := func(version int, desired, reported string) []byte {
		return []byte(fmt.Sprintf(`{"previous":{"state":{"desired":{},"reported":{}},"version":%d},`+
			`"current":{"state":{"desired":%s,"reported":%s},"metadata":{},"version":%d},"timestamp":1764990000,"clientToken":"x"}`,
			version-1, desired, reported, version))
	}
	applied := func(kind string) float64 { return testutil.ToFloat64(d.met.messages.WithLabelValues(kind, "applied")) }
	d.handle(topic+"delta", []byte(`{"version":11,"timestamp":1,"state":{"x":"old"},"metadata":{"x":{"timestamp":1}}}`))
	if n := testutil.ToFloat64(d.met.messages.WithLabelValues("delta", "stale")); n != 1 || msg() != `{"state":{"interval":60},"version":12}` {
		t.Fatalf("an older delta: stale %v, %s", n, msg())
	}
	d.handle(topic+"delta", []byte(`{"version":13,"timestamp":1,"state":{"mode":"turbo"},"metadata":{"mode":{"timestamp":1}},"clientToken":"c"}`))
	if got := msg(); got != `{"state":{"interval":60,"mode":"turbo"},"version":13}` || applied("delta") != 1 {
		t.Fatalf("after a delta message: %s", got)
	}
	d.handle("$aws/things/dev-2/shadow/update/delta", []byte(`{"version":13,"timestamp":1,"state":{"mode":"turbo"},"metadata":{}}`))
	if n := testutil.ToFloat64(d.met.messages.WithLabelValues("delta", "not_cached")); n != 1 {
		t.Fatalf("a thing never asked about: not_cached %v", n)
	}
	// The device reported interval 60: documents give the whole state.
	d.handle(topic+"documents", documents(14, `{"interval":60,"mode":"turbo"}`, `{"interval":60,"mode":"eco"}`))
	if got := msg(); got != `{"state":{"mode":"turbo"},"version":14}` {
		t.Fatalf("after documents: %s", got)
	}
	// Everything reported: no delta (and AWS publishes no delta message).
	d.handle(topic+"documents", documents(15, `{"interval":60,"mode":"turbo"}`, `{"interval":60,"mode":"turbo"}`))
	if got := msg(); got != "" {
		t.Fatalf("after the last report: %q", got)
	}
	if n := drain(); n != 3 {
		t.Fatalf("%d notifications, want 3 (each change of the delta)", n)
	}
	// The same state again: no notification.
	d.handle(topic+"documents", documents(16, `{"interval":60,"mode":"turbo"}`, `{"interval":60,"mode":"turbo","t":1}`))
	if n := drain(); n != 0 {
		t.Fatalf("%d notifications for an unchanged delta", n)
	}
	d.handle(topic+"delta", []byte(`{"version":17,"timestamp":1,"state":{"mode":"off"},"metadata":{}}`))
	d.handle("$aws/things/dev-1/shadow/delete/accepted", []byte(`{"version":18,"timestamp":1}`))
	if got := msg(); got != "" || applied("delete") != 1 {
		t.Fatalf("after the shadow was deleted: %q", got)
	}
	d.handle(topic+"delta", []byte(`{"state":{"mode":"off"}}`))
	if n := testutil.ToFloat64(d.met.messages.WithLabelValues("delta", "invalid")); n != 1 {
		t.Fatalf("a delta without version: invalid %v", n)
	}
	if f.count("dev-1") != 1 {
		t.Fatalf("calls %d", f.count("dev-1"))
	}
}

// TestRefreshWithoutDocuments: without the documents topic, a request for a thing with a
// pending delta schedules one GetThingShadow refreshDelay later (one, however many requests);
// the refresh learns that the device's report cleared the delta.
func TestRefreshWithoutDocuments(t *testing.T) {
	f := newFake()
	f.docs["dev-1"] = awsShadow
	d, changed, _ := newTest(t, Config{}, f)
	now := time.Now()
	for range 3 {
		d.Delta([]byte("dev-1"))
	}
	wait(t, changed) // the first GetThingShadow's
	if due := d.dueRefreshes(now.Add(refreshDelay - time.Second)); len(due) != 0 {
		t.Fatalf("refresh due before its delay: %v", due)
	}
	// A request after the due time, before the refresh was made, does not postpone it.
	d.scheduleRefreshAt(t, "dev-1", now.Add(refreshDelay+time.Millisecond))
	due := d.dueRefreshes(now.Add(refreshDelay + time.Second))
	if len(due) != 1 || due[0] != "dev-1" {
		t.Fatalf("due refreshes %v, want [dev-1] once", due)
	}
	// The worker applied the device's report meanwhile: AWS's shadow has no delta.
	f.mu.Lock()
	f.docs["dev-1"] = `{"state":{"desired":{"interval":60},"reported":{"interval":60}},"version":13}`
	f.mu.Unlock()
	d.refresh(t.Context(), "dev-1", time.Now())
	if got := d.Delta([]byte("dev-1")); got != nil {
		t.Fatalf("after the refresh: %q", got)
	}
	if n := testutil.ToFloat64(d.met.refreshes.WithLabelValues("ok")); n != 1 || f.count("dev-1") != 2 {
		t.Fatalf("refreshes %v, calls %d", n, f.count("dev-1"))
	}
	if n := wait(t, changed); n != "dev-1" {
		t.Fatalf("notified %q", n)
	}
	// No delta: requests schedule nothing more.
	d.Delta([]byte("dev-1"))
	if due := d.dueRefreshes(now.Add(time.Hour)); len(due) != 0 {
		t.Fatalf("refresh scheduled without a delta: %v", due)
	}
}

// scheduleRefreshAt is what a request for name at now does to the refresh schedule.
func (d *Downlink) scheduleRefreshAt(t *testing.T, name string, now time.Time) {
	t.Helper()
	_, ok, refresh := d.cache.get([]byte(name), now.UnixNano())
	if !ok {
		t.Fatalf("%s not cached", name)
	}
	d.scheduleRefresh([]byte(name), refresh, now)
}

// TestCacheBound: the cache stays within its bytes; evicted things are fetched again.
func TestCacheBound(t *testing.T) {
	f := newFake()
	for i := range 500 {
		f.docs["dev-"+strconv.Itoa(i)] = awsShadow
	}
	const bound = 64 << 10
	d, _, _ := newTest(t, Config{CacheBytes: bound}, f)
	for i := range 500 {
		d.Delta([]byte("dev-" + strconv.Itoa(i)))
	}
	if b := testutil.ToFloat64(d.met.bytes); b > bound || b < bound/2 {
		t.Fatalf("cache bytes %v, bound %d", b, bound)
	}
	if ev := testutil.ToFloat64(d.met.evictions); ev == 0 {
		t.Fatal("no evictions")
	}
	d.Delta([]byte("dev-0"))
	if f.count("dev-0") != 2 {
		t.Fatalf("evicted dev-0 fetched %d times, want 2", f.count("dev-0"))
	}
	if got := d.Delta([]byte("dev-499")); got == nil || f.count("dev-499") != 1 {
		t.Fatalf("the newest entry: %q, %d calls", got, f.count("dev-499"))
	}
}

// TestMQTT: against mosquitto with TLS and client certificates (standing in for AWS IoT), the
// gateway's connection receives AWS's delta and documents messages for a thing a device asked
// about; named shadows' messages are ignored; a broker that lost the session empties the cache.
func TestMQTT(t *testing.T) {
	b := mqtttest.Start(t)
	f := newFake()
	f.docs["dev-1"] = `{"state":{"reported":{"interval":30}},"version":3}`
	reg := prometheus.NewRegistry()
	changed := make(chan string, 16)
	d, err := New(Config{Endpoint: b.Addr(), ClientID: "coapgw-test", CertFile: b.CertFile, KeyFile: b.KeyFile, CAFile: b.CAFile, Documents: true},
		aws.Config{}, func(n string) { changed <- n }, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	d.get = f
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, "the connection", func() bool { return testutil.ToFloat64(d.met.connected) == 1 })
	if got := d.Delta([]byte("dev-1")); got != nil {
		t.Fatalf("no delta yet: %q", got)
	}
	b.Publish("$aws/things/dev-1/shadow/name/coapgw/update/delta", []byte(`{"version":9,"timestamp":1,"state":{"bogus":1},"metadata":{}}`))
	b.Publish("$aws/things/dev-1/shadow/update/delta", []byte(awsDelta))
	if n := wait(t, changed); n != "dev-1" {
		t.Fatalf("notified %q", n)
	}
	if got := string(d.Delta([]byte("dev-1"))); got != `{"state":{"fw":{"channel":"beta"},"interval":60},"version":7}` {
		t.Fatalf("after the delta message: %q", got)
	}
	b.Publish("$aws/things/dev-1/shadow/update/documents", []byte(awsDocuments))
	wait(t, changed)
	if got := string(d.Delta([]byte("dev-1"))); got != `{"state":{"fw":{"channel":"beta"}},"version":8}` {
		t.Fatalf("after documents: %q", got)
	}
	if n := testutil.ToFloat64(d.met.messages.WithLabelValues("delta", "applied")); n != 1 {
		t.Fatalf("delta messages applied %v (the named shadow's must not count)", n)
	}
	// The broker restarts without our session: what was missed is unknown; the cache empties
	// and the next request asks AWS again.
	b.Restart()
	waitFor(t, "the cache reset", func() bool { return testutil.ToFloat64(d.met.resets) >= 2 && testutil.ToFloat64(d.met.connected) == 1 })
	d.Delta([]byte("dev-1"))
	if f.count("dev-1") != 2 {
		t.Fatalf("GetThingShadow after the session was lost: %d calls, want 2", f.count("dev-1"))
	}
}

// TestALPNOn443: on port 443 the connection asks for AWS IoT's MQTT protocol by ALPN.
func TestALPNOn443(t *testing.T) {
	b := mqtttest.Start(t)
	for ep, want := range map[string]string{"example-ats.iot.eu-west-1.amazonaws.com:443": "x-amzn-mqtt-ca", "example-ats.iot.eu-west-1.amazonaws.com": ""} {
		d, err := New(Config{Endpoint: ep, ClientID: "c", CertFile: b.CertFile, KeyFile: b.KeyFile}, aws.Config{}, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(d.tls.NextProtos, ","); got != want {
			t.Errorf("%s: ALPN %q, want %q", ep, got, want)
		}
		if ep == "example-ats.iot.eu-west-1.amazonaws.com" && d.cfg.Endpoint != ep+":8883" {
			t.Errorf("default port: %s", d.cfg.Endpoint)
		}
	}
}

func wait(t *testing.T, ch chan string) string {
	t.Helper()
	select {
	case n := <-ch:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no notification")
		return ""
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestCacheEstimate: the cache's estimate of its memory is within a factor of two of what its
// entries take on the heap (things without a delta, the common case, and with one).
func TestCacheEstimate(t *testing.T) {
	for _, delta := range []map[string]any{nil, {"interval": json.Number("60"), "fw": map[string]any{"channel": "beta"}}} {
		met := newMetrics(nil)
		c := newCache(1<<40, 0, met)
		const n = 20000
		names := make([]string, n)
		for i := range names {
			names[i] = fmt.Sprintf("sensor-%08d", i)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		now := time.Now()
		for i, name := range names {
			c.startFetch(name, now)
			c.fetched(name, int64(i), delta, true)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap := float64(after.HeapAlloc-before.HeapAlloc) / n
		est := float64(c.bytes) / n
		t.Logf("delta %v: %.0f bytes per thing on the heap, %.0f estimated", delta != nil, heap, est)
		if est < heap/2 || est > 2*heap {
			t.Errorf("estimate %.0f bytes per thing, heap %.0f", est, heap)
		}
		runtime.KeepAlive(c)
	}
}
