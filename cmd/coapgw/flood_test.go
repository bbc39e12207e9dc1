package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
)

// TestFloodOfSources sends one CON from each of 100,000 distinct source addresses (127.1.0.0
// onwards: all of 127/8 is loopback) while 100 real devices post telemetry (TESTPLAN C17): the
// gateway's state stays bounded (the dedup cap holds, peak RSS stays low) and every request of the
// real devices is acknowledged. Their latency is logged, not asserted: the machine is shared.
func TestFloodOfSources(t *testing.T) {
	if testing.Short() {
		t.Skip("floods the gateway")
	}
	const sources, devices, dedupCap = 100_000, 100, 50_000
	dir := t.TempDir()
	g := startGW(t, dir, "--dedup-max-entries", strconv.Itoa(dedupCap))

	var stop atomic.Bool
	var mu sync.Mutex
	var before, during []time.Duration
	var flooding atomic.Bool
	failed, acked := 0, 0
	var wg sync.WaitGroup
	for d := range devices {
		wg.Go(func() {
			c, err := coaptest.Dial(g.coap)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.Timeout = 2 * time.Second
			for n := 0; !stop.Load(); n++ {
				req := c.Request(coapmsg.Confirmable, coapmsg.POST, fmt.Sprintf("/sensor/real-%d", d), fmt.Appendf(nil, `{"n":%d}`, n))
				start, inFlood := time.Now(), flooding.Load()
				ok := false
				for try := 0; try < 5 && !ok; try++ { // the same CON retransmitted, as a device does
					resp, err := c.Do(req)
					ok = err == nil && resp.Code == coapmsg.Changed
				}
				el := time.Since(start)
				mu.Lock()
				if !ok {
					failed++
				} else {
					acked++
					if inFlood {
						during = append(during, el)
					} else {
						before = append(before, el)
					}
				}
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	time.Sleep(time.Second)
	flooding.Store(true)
	floodStart := time.Now()
	gw := net.UDPAddrFromAddrPort(g.coap)
	var sent atomic.Int64
	var fwg sync.WaitGroup
	for w := range 4 {
		fwg.Go(func() {
			for i := w; i < sources; i += 4 {
				ip := net.IPv4(127, 1+byte(i>>16), byte(i>>8), byte(i))
				conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
				if err != nil {
					t.Errorf("bind %v: %v", ip, err)
					return
				}
				m := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: uint16(i), Token: []byte{byte(i)},
					Options: []coapmsg.Option{{Number: coapmsg.URIPath, Value: []byte("flood")}, {Number: coapmsg.URIPath, Value: []byte("x" + strconv.Itoa(i))}},
					Payload: []byte(`{"v":1}`)}
				b, _ := m.Append(nil)
				if _, err := conn.WriteToUDP(b, gw); err == nil {
					sent.Add(1)
				}
				conn.Close()
			}
		})
	}
	fwg.Wait()
	floodTime := time.Since(floodStart)
	time.Sleep(2 * time.Second) // the devices keep posting after the flood
	flooding.Store(false)
	stop.Store(true)
	wg.Wait()

	metrics := scrape(t, g)
	entries := metricValue(t, metrics, `coapgw_coap_dedup_entries`)
	floodAcked := metricValue(t, metrics, `coapgw_coap_responses_total{code="2.04"}`)
	hwm := vmHWM(t, g.cmd.Process.Pid)
	pct := func(ds []time.Duration, p float64) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		slices.Sort(ds)
		return ds[int(float64(len(ds)-1)*p)]
	}
	t.Logf("flood: %d datagrams from distinct addresses in %v; 2.04 answers in all %v; dedup entries %v (cap %d); peak RSS %d MB",
		sent.Load(), floodTime.Round(time.Millisecond), floodAcked, entries, dedupCap, hwm>>20)
	t.Logf("real devices: %d acknowledged, %d failed; latency before the flood p50 %v p99 %v (%d), during p50 %v p99 %v (%d)",
		acked, failed, pct(before, .5), pct(before, .99), len(before), pct(during, .5), pct(during, .99), len(during))
	if sent.Load() != sources {
		t.Errorf("sent %d of %d", sent.Load(), sources)
	}
	if failed != 0 || len(during) == 0 {
		t.Errorf("real devices: %d requests failed, %d acknowledged during the flood", failed, len(during))
	}
	if entries > dedupCap {
		t.Errorf("dedup holds %v entries, cap %d", entries, dedupCap)
	}
	if hwm > 256<<20 {
		t.Errorf("peak RSS %d MB", hwm>>20)
	}
	if floodAcked < float64(sources)/2 {
		t.Errorf("only %v requests acknowledged: the flood did not reach the gateway", floodAcked)
	}
}

func scrape(t testing.TB, g *gw) string {
	t.Helper()
	return scrapeAddr(t, g.http)
}

// scrapeAddr returns the Prometheus text of the /metrics on the HTTP address addr.
func scrapeAddr(t testing.TB, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func metricValue(t testing.TB, metrics, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(metrics)
	if m == nil {
		t.Fatalf("/metrics lacks %s", name)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// vmHWM is a process's peak resident set size in bytes.
func vmHWM(t testing.TB, pid int) int64 { return procStatusBytes(t, pid, "VmHWM:") }

// procStatusBytes is a size field of /proc/<pid>/status ("VmHWM:", "VmRSS:") in bytes.
func procStatusBytes(t testing.TB, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s", field)
	return 0
}

// TestDeviceRateLimit: one device posting far over --device-rate (TESTPLAN C18) gets 5.03 with
// Max-Age once its burst is spent, while devices within their rate keep getting 2.04; the spool
// holds exactly what was acknowledged.
func TestDeviceRateLimit(t *testing.T) {
	dir := t.TempDir()
	g := startGW(t, dir, "--device-rate", "60", "--device-burst", "5") // one a second, bursts of 5
	noisy, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer noisy.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	quietCodes := map[coapmsg.Code]int{}
	for d := range 20 {
		wg.Go(func() {
			c, err := coaptest.Dial(g.coap)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			for n := range 3 {
				resp, err := c.Post(fmt.Sprintf("/sensor/quiet-%d", d), fmt.Sprintf(`{"n":%d}`, n))
				mu.Lock()
				if err != nil {
					quietCodes[0]++
				} else {
					quietCodes[resp.Code]++
				}
				mu.Unlock()
				time.Sleep(1100 * time.Millisecond)
			}
		})
	}
	start := time.Now()
	noisyCodes := map[coapmsg.Code]int{}
	for time.Since(start) < 3*time.Second {
		resp, err := noisy.Post("/sensor/noisy", `{"v":1}`)
		if err != nil {
			t.Fatal(err)
		}
		noisyCodes[resp.Code]++
		if resp.Code == coapmsg.ServiceUnavailable {
			v, _ := resp.Option(coapmsg.MaxAge)
			if age, ok := coapmsg.Uint(v); !ok || age != 1 {
				t.Fatalf("5.03 Max-Age %d, want 1 (s until the next token)", age)
			}
		}
	}
	elapsed := time.Since(start)
	wg.Wait()
	sent := noisyCodes[coapmsg.Changed] + noisyCodes[coapmsg.ServiceUnavailable]
	t.Logf("noisy device: %d requests in %v: %v; quiet devices: %v", sent, elapsed.Round(time.Millisecond), noisyCodes, quietCodes)
	if sent < 10*(5+3) {
		t.Fatalf("the noisy device sent only %d requests: not 10× its quota", sent)
	}
	if max := 5 + int(elapsed.Seconds()) + 1; noisyCodes[coapmsg.Changed] > max || noisyCodes[coapmsg.Changed] < 5 {
		t.Errorf("noisy device got %d 2.04, want 5–%d", noisyCodes[coapmsg.Changed], max)
	}
	if quietCodes[coapmsg.Changed] != 60 {
		t.Errorf("quiet devices: %v, want 60 × 2.04", quietCodes)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got, want := len(spoolRecords(t, dir)), noisyCodes[coapmsg.Changed]+quietCodes[coapmsg.Changed]; got != want {
		t.Errorf("spool holds %d records, %d were acknowledged", got, want)
	}
}
