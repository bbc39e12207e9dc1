package ingest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

func TestLimiterBucket(t *testing.T) {
	l := newLimiter(60, 3, 1000) // one a second, bursts of 3
	now := int64(1e18)
	dev := []byte("dev-1")
	for i := range 3 {
		if ok, _ := l.allow([]byte("sensor"), dev, now); !ok {
			t.Fatalf("burst record %d refused", i)
		}
	}
	ok, wait := l.allow([]byte("sensor"), dev, now)
	if ok || wait != time.Second {
		t.Fatalf("4th record at once: %v, wait %v; want refused, 1s", ok, wait)
	}
	if ok, _ := l.allow([]byte("sensor"), []byte("dev-2"), now); !ok {
		t.Fatal("another device refused")
	}
	if ok, _ := l.allow([]byte("meter"), dev, now); !ok {
		t.Fatal("the same id of another type refused")
	}
	if ok, wait := l.allow([]byte("sensor"), dev, now+int64(400*time.Millisecond)); ok || wait != 600*time.Millisecond {
		t.Fatalf("after 0.4 s: %v, wait %v", ok, wait)
	}
	if ok, _ := l.allow([]byte("sensor"), dev, now+int64(time.Second)); !ok {
		t.Fatal("refused after a second")
	}
	// Refilled to the burst, never beyond.
	later := now + int64(time.Hour)
	for i := range 4 {
		if ok, _ := l.allow([]byte("sensor"), dev, later); ok != (i < 3) {
			t.Fatalf("an hour later, record %d: %v", i, ok)
		}
	}
	if newLimiter(0, 10, 10) != nil {
		t.Fatal("rate 0 must mean no limiter")
	}
}

// The table is bounded: refilled buckets are swept, and when every tracked device is busy a new
// one goes through untracked instead of being refused or growing the table.
func TestLimiterBounded(t *testing.T) {
	l := newLimiter(60, 1, 64*4) // 4 per shard
	now := int64(1e18)
	for i := range 10_000 {
		l.allow([]byte("s"), fmt.Appendf(nil, "d%d", i), now) // each takes its only token: busy
	}
	if n := l.entries(); n > 64*4 {
		t.Fatalf("%d devices tracked, cap %d", n, 64*4)
	}
	if l.untracked.Load() == 0 {
		t.Fatal("nothing untracked with a full table of busy devices")
	}
	// A second on, every bucket has refilled: sweeping makes room for new devices again. One new
	// device per shard (names picked by their hash; the seed is random), so that the test does not
	// depend on how names spread: five in one shard would rightly overflow its four places.
	later := now + int64(2*time.Second)
	before := l.untracked.Load()
	var placed [len(l.shards)]bool
	for i, n := 0, 0; n < len(placed); i++ {
		id := fmt.Appendf(nil, "new%d", i)
		if sh := l.key([]byte("s"), id) % uint64(len(placed)); !placed[sh] {
			placed[sh] = true
			n++
			l.allow([]byte("s"), id, later)
		}
	}
	if n := l.entries(); n != 64 {
		t.Fatalf("%d devices tracked after the sweep, want the 64 new ones (the old had refilled)", n)
	}
	if l.untracked.Load() != before {
		t.Fatalf("%d new devices untracked after the old buckets refilled", l.untracked.Load()-before)
	}
}

// One device sending far over its quota gets 5.03 with Max-Age (CON) or nothing (NON), and
// nothing of its excess is stored; another device is not affected (TESTPLAN C18).
func TestDeviceRateLimit(t *testing.T) {
	r := newRigWith(t, Config{GatewayID: "gw-test", DeviceRate: 6, DeviceBurst: 2}) // one per 10 s
	host := opt(coapmsg.URIHost, "coapgw.example.com")
	var codes []coapmsg.Code
	for range 20 {
		resp := r.do(coapmsg.POST, append(pathOpts("sensor", "noisy"), host), `{"v":1}`)
		codes = append(codes, resp.Code)
		if resp.Code == coapmsg.ServiceUnavailable {
			v, ok := resp.Option(coapmsg.MaxAge)
			if age, _ := coapmsg.Uint(v); !ok || age < 1 || age > 10 {
				t.Fatalf("5.03 Max-Age %v (%v), want 1–10 s", age, ok)
			}
			if string(resp.Payload) != "device over its rate limit" {
				t.Fatalf("5.03 diagnostic %q", resp.Payload)
			}
		}
	}
	for i, c := range codes {
		if want := coapmsg.ServiceUnavailable; i < 2 && c != coapmsg.Changed || i >= 2 && c != want {
			t.Fatalf("answers %v: want two 2.04 then 5.03", codes)
		}
	}
	if resp := r.do(coapmsg.POST, pathOpts("sensor", "quiet"), `{"v":1}`); resp.Code != coapmsg.Changed {
		t.Fatalf("another device: %v", resp.Code)
	}
	// NON over the limit: no answer at all, nothing stored.
	m := coapmsg.Message{Type: coapmsg.NonConfirmable, Code: coapmsg.POST, MID: 999, Token: []byte{9},
		Options: pathOpts("sensor", "noisy"), Payload: []byte(`{"v":2}`)}
	b, _ := m.Append(nil)
	r.ep.HandleDatagram(peer, b)
	r.cap.mu.Lock()
	answers := len(r.cap.out)
	r.cap.mu.Unlock()
	if answers != 0 {
		t.Fatalf("%d answers to a NON over the limit", answers)
	}
	if got := len(r.sp.data); got != 3 {
		t.Fatalf("%d records stored, want 3 (two of the noisy device, one of the quiet one)", got)
	}
}

// BenchmarkLimiterAllow: one token bucket check for one of 100,000 devices.
func BenchmarkLimiterAllow(b *testing.B) {
	l := newLimiter(600, 10, 1_000_000)
	ids := make([][]byte, 100_000)
	for i := range ids {
		ids[i] = fmt.Appendf(nil, "dev-%d", i)
	}
	typ := []byte("sensor")
	now := time.Now().UnixNano()
	i := 0
	for b.Loop() {
		l.allow(typ, ids[i%len(ids)], now+int64(i)*1000)
		i++
	}
}

// coapgw_ingest_limiter_entries reports the devices whose bucket is kept, with --device-rate
// only.
func TestLimiterEntriesGauge(t *testing.T) {
	reg := prometheus.NewRegistry()
	h, err := New(Config{GatewayID: "gw-test", DeviceRate: 60}, &fakeSpool{}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixNano()
	for i := range 3 {
		h.limit.allow([]byte("sensor"), fmt.Appendf(nil, "d%d", i), now)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`# HELP coapgw_ingest_limiter_entries Devices whose --device-rate bucket the gateway keeps.
# TYPE coapgw_ingest_limiter_entries gauge
coapgw_ingest_limiter_entries 3
`), "coapgw_ingest_limiter_entries"); err != nil {
		t.Error(err)
	}
	reg = prometheus.NewRegistry()
	if _, err := New(Config{GatewayID: "gw-test"}, &fakeSpool{}, nil, reg); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "coapgw_ingest_limiter_entries"); err != nil || n != 0 {
		t.Errorf("without --device-rate: %d series (%v), want none", n, err)
	}
}
