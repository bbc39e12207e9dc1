package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testConfig is a short run against addr: 8 devices, 2 in flight, 300 ms window.
func testConfig(addr string) Config {
	cfg := DefaultConfig()
	cfg.Target = addr
	cfg.Devices = 8
	cfg.Workers = 2
	cfg.Duration = 300 * time.Millisecond
	cfg.Warmup = 50 * time.Millisecond
	cfg.Ramp = 10 * time.Millisecond
	cfg.Seed = 1
	return cfg
}

func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var text bytes.Buffer
	res.WriteText(&text)
	t.Logf("\n%s", text.String())
	return res
}

// inFlightSlack is how far window-edge effects may separate counts that pair up one to one.
func inFlightSlack(cfg Config) uint64 { return uint64(cfg.Devices * cfg.Inflight) }

func near(a, b, slack uint64) bool { return a <= b+slack && b <= a+slack }

func checkLatency(t *testing.T, l LatencySummary, lo, hi time.Duration) {
	t.Helper()
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	if l.Count == 0 {
		t.Fatal("no latency samples")
	}
	if !(l.MinUS <= l.P50US && l.P50US <= l.P90US && l.P90US <= l.P99US && l.P99US <= l.P999US && l.P999US <= l.MaxUS) {
		t.Errorf("percentiles out of order: %+v", l)
	}
	if l.MinUS < us(lo) || l.MaxUS > us(hi) {
		t.Errorf("latency range [%.0fµs, %.0fµs] outside [%v, %v]", l.MinUS, l.MaxUS, lo, hi)
	}
}

func TestPiggybacked(t *testing.T) {
	r := startResponder(t, respPiggyback)
	cfg := testConfig(r.addr())
	res := run(t, cfg)

	if res.Delivered < 100 {
		t.Fatalf("delivered %d, want at least 100 in %v on loopback", res.Delivered, cfg.Duration)
	}
	if got := res.Codes["2.04"]; got != res.Delivered || len(res.Codes) != 1 {
		t.Errorf("codes %v, want only 2.04=%d", res.Codes, res.Delivered)
	}
	if res.Responses != res.Delivered {
		t.Errorf("responses %d != delivered %d", res.Responses, res.Delivered)
	}
	if !near(res.Sent, res.Delivered, inFlightSlack(cfg)) {
		t.Errorf("sent %d vs delivered %d: more apart than the %d requests in flight", res.Sent, res.Delivered, inFlightSlack(cfg))
	}
	if res.Lost+res.Retransmissions+res.Unmatched+res.TokenMismatch+res.Malformed+res.SendErrors+res.RecvErrors != 0 {
		t.Errorf("unexpected losses or anomalies: %+v", res)
	}
	if want := float64(res.Delivered) / cfg.Duration.Seconds(); res.DeliveredPerSec != want {
		t.Errorf("delivered/s %v, want %v", res.DeliveredPerSec, want)
	}
	checkLatency(t, res.Latency, 0, time.Second)
	if res.LatencyAll.Count != res.Latency.Count {
		t.Errorf("latency samples: all %d, 2.04 %d", res.LatencyAll.Count, res.Latency.Count)
	}
	if res.Request != "" {
		t.Errorf("request %q: the default POST /{type}/{id} is not named", res.Request)
	}

	_, _, _, transmits, types, paths, midGaps, bad := r.stats()
	if len(bad) > 0 {
		t.Errorf("malformed requests: %q", bad)
	}
	if paths != cfg.Devices {
		t.Errorf("requests came for %d device ids, want %d", paths, cfg.Devices)
	}
	ports := map[uint16]bool{}
	for k, n := range transmits {
		ports[k.peer.Port()] = true
		if n != 1 {
			t.Errorf("%v MID %d sent %d times with no loss", k.peer, k.mid, n)
		}
	}
	if len(ports) != cfg.Devices {
		t.Errorf("requests came from %d source ports, want one per device (%d)", len(ports), cfg.Devices)
	}
	if midGaps != 0 {
		t.Errorf("%d times a device's MID did not increment by one", midGaps)
	}
	if types[coapmsg.Confirmable] == 0 || types[coapmsg.NonConfirmable] != 0 {
		t.Errorf("message types %v, want CON only", types)
	}
}

// TestPutFixedPath: --method put --path /example_data (how make bench drives libcoap's example
// server) sends PUT to that one path from every device, each with its own socket.
func TestPutFixedPath(t *testing.T) {
	r := startResponderExpect(t, respPiggyback, expect{code: coapmsg.PUT, path: []string{"example_data"}})
	cfg := testConfig(r.addr())
	cfg.Method, cfg.Path = "put", "/example_data"
	res := run(t, cfg)
	if res.Delivered < 100 || res.Codes["2.04"] != res.Delivered || len(res.Codes) != 1 {
		t.Fatalf("delivered %d, codes %v; want at least 100, 2.04 only", res.Delivered, res.Codes)
	}
	var text bytes.Buffer
	res.WriteText(&text)
	if res.Request != "PUT /example_data" || !strings.Contains(text.String(), "CON PUT /example_data, 8 devices") {
		t.Errorf("request %q; the text output should name it:\n%s", res.Request, text.String())
	}
	requests, _, _, transmits, _, _, _, bad := r.stats()
	if len(bad) > 0 {
		t.Errorf("malformed requests: %q", bad)
	}
	if requests == 0 {
		t.Fatal("the responder saw no request")
	}
	ports := map[uint16]bool{}
	for k := range transmits {
		ports[k.peer.Port()] = true
	}
	if len(ports) != cfg.Devices {
		t.Errorf("requests came from %d source ports, want %d", len(ports), cfg.Devices)
	}

	// A path of several segments becomes that many Uri-Path options.
	r2 := startResponderExpect(t, respPiggyback, expect{code: coapmsg.POST, path: []string{"a", "b-2", "c"}})
	cfg = testConfig(r2.addr())
	cfg.Path = "/a/b-2/c"
	if res := run(t, cfg); res.Delivered == 0 {
		t.Fatal("nothing delivered to /a/b-2/c")
	}
	if _, _, _, _, _, _, _, bad := r2.stats(); len(bad) > 0 {
		t.Errorf("malformed requests: %q", bad)
	}
}

func TestRetransmission(t *testing.T) {
	r := startResponder(t, respDropFirst)
	cfg := testConfig(r.addr())
	// Timeouts long against a busy machine's scheduling delays: a responder held up for more
	// than the second timeout drew a third transmission, with 30 ms and then, under -race on a
	// loaded machine (the first request of each device answered after 400-600 ms), with 100 ms.
	cfg.AckTimeout = 250 * time.Millisecond
	cfg.Duration = 1500 * time.Millisecond
	res := run(t, cfg)

	if res.Delivered < 20 {
		t.Fatalf("delivered %d, want at least 20", res.Delivered)
	}
	// Every request needed exactly one retransmission.
	if !near(res.Retransmissions, res.Delivered, inFlightSlack(cfg)) {
		t.Errorf("retransmissions %d, delivered %d: want one retransmission per delivery", res.Retransmissions, res.Delivered)
	}
	if res.Lost != 0 || res.Unmatched != 0 {
		t.Errorf("lost %d, unmatched %d, want 0", res.Lost, res.Unmatched)
	}
	// First transmission → response spans one initial timeout: ACK_TIMEOUT to 1.5×.
	checkLatency(t, res.Latency, cfg.AckTimeout, time.Second)
	// The retransmission leaves after the initial timeout, ACK_TIMEOUT to 1.5 × ACK_TIMEOUT.
	// (A second timeout would put it at 3 × ACK_TIMEOUT or more; the margin is for scheduling.)
	if p50 := time.Duration(res.Latency.P50US * 1e3); p50 > 3*cfg.AckTimeout/2+cfg.AckTimeout/2 {
		t.Errorf("p50 %v, want about one initial timeout (%v to %v)", p50, cfg.AckTimeout, 3*cfg.AckTimeout/2)
	}

	_, _, _, transmits, _, _, _, _ := r.stats()
	for k, n := range transmits {
		if n > 2 {
			t.Errorf("%v MID %d transmitted %d times, want at most 2", k.peer, k.mid, n)
		}
	}
}

func TestGiveUp(t *testing.T) {
	r := startResponder(t, respSilent)
	cfg := testConfig(r.addr())
	cfg.AckTimeout = 10 * time.Millisecond
	cfg.MaxRetransmit = 2 // gives up after 10+20+40 ms, up to 1.5× that
	cfg.Warmup = 0
	cfg.Duration = 500 * time.Millisecond
	res := run(t, cfg)

	if res.Lost < inFlightSlack(cfg) {
		t.Fatalf("lost %d, want at least one round per slot (%d)", res.Lost, inFlightSlack(cfg))
	}
	if res.Delivered != 0 || res.Responses != 0 {
		t.Errorf("delivered %d, responses %d from a silent server", res.Delivered, res.Responses)
	}
	if res.Retransmissions < 2*res.Lost {
		t.Errorf("retransmissions %d < 2 × lost %d", res.Retransmissions, res.Lost)
	}
	if res.Latency.Count != 0 {
		t.Errorf("latency samples without responses: %+v", res.Latency)
	}
	_, _, _, transmits, _, _, _, _ := r.stats()
	three := 0
	for k, n := range transmits {
		if n > 3 {
			t.Errorf("%v MID %d transmitted %d times, want at most 1+MaxRetransmit", k.peer, k.mid, n)
		}
		if n == 3 {
			three++
		}
	}
	if uint64(three) < res.Lost {
		t.Errorf("%d exchanges were transmitted 3 times, but %d were given up", three, res.Lost)
	}
}

func TestSeparateResponse(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode respMode
	}{
		{"empty ACK first", respSeparate},
		{"response overtakes ACK", respSeparateFirst},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startResponder(t, tc.mode)
			cfg := testConfig(r.addr())
			res := run(t, cfg)

			if res.Delivered < 100 {
				t.Fatalf("delivered %d, want at least 100", res.Delivered)
			}
			slack := inFlightSlack(cfg)
			if !near(res.SeparateResponses, res.Delivered, 0) || !near(res.ACKsSent, res.Delivered, slack) {
				t.Errorf("separate %d, ACKs sent %d, delivered %d: want equal", res.SeparateResponses, res.ACKsSent, res.Delivered)
			}
			switch tc.mode {
			case respSeparate:
				if !near(res.EmptyACKs, res.Delivered, slack) || res.Unmatched != 0 {
					t.Errorf("empty ACKs %d, unmatched %d, delivered %d", res.EmptyACKs, res.Unmatched, res.Delivered)
				}
			case respSeparateFirst:
				// The late empty ACK finds its request already answered.
				if res.EmptyACKs != 0 || !near(res.Unmatched, res.Delivered, slack) {
					t.Errorf("empty ACKs %d, unmatched %d, delivered %d", res.EmptyACKs, res.Unmatched, res.Delivered)
				}
			}
			if res.Retransmissions != 0 || res.Lost != 0 || res.SeparateLost != 0 {
				t.Errorf("retransmissions %d, lost %d, separate lost %d", res.Retransmissions, res.Lost, res.SeparateLost)
			}
			checkLatency(t, res.Latency, 0, time.Second)
			// Every CON response the server sent (but those in flight at the end) was acknowledged.
			_, acks, cons, _, _, _, _, _ := r.stats()
			if acks < cons-int(slack) {
				t.Errorf("server got %d ACKs for %d CON responses", acks, cons)
			}
		})
	}
}

func TestNON(t *testing.T) {
	r := startResponder(t, respNON)
	cfg := testConfig(r.addr())
	cfg.NON = true
	res := run(t, cfg)

	if res.Mode != "NON" || res.Delivered < 100 || res.Codes["2.04"] != res.Delivered {
		t.Fatalf("mode %s, delivered %d, codes %v", res.Mode, res.Delivered, res.Codes)
	}
	if res.Lost+res.Retransmissions+res.ACKsSent+res.Unmatched != 0 {
		t.Errorf("lost %d, retransmissions %d, ACKs %d, unmatched %d, want 0", res.Lost, res.Retransmissions, res.ACKsSent, res.Unmatched)
	}
	checkLatency(t, res.Latency, 0, time.Second)
	_, _, _, _, types, _, _, bad := r.stats()
	if types[coapmsg.NonConfirmable] == 0 || types[coapmsg.Confirmable] != 0 {
		t.Errorf("message types %v, want NON only", types)
	}
	if len(bad) > 0 {
		t.Errorf("malformed requests: %q", bad)
	}
}

func TestNONTimeout(t *testing.T) {
	r := startResponder(t, respSilent)
	cfg := testConfig(r.addr())
	cfg.NON = true
	cfg.NONTimeout = 20 * time.Millisecond
	cfg.Warmup = 0
	res := run(t, cfg)
	if res.Lost < inFlightSlack(cfg) || res.Retransmissions != 0 {
		t.Errorf("lost %d, retransmissions %d: want NON requests to time out without retransmission", res.Lost, res.Retransmissions)
	}
	_, _, _, transmits, _, _, _, _ := r.stats()
	for k, n := range transmits {
		if n != 1 {
			t.Errorf("NON %v MID %d sent %d times", k.peer, k.mid, n)
		}
	}
}

func TestCodes(t *testing.T) {
	r := startResponder(t, respAlternate503)
	res := run(t, testConfig(r.addr()))
	c204, c503, c404 := res.Codes["2.04"], res.Codes["5.03"], res.Codes["4.04"]
	if c204 == 0 || c503 == 0 || c404 == 0 || c204+c503+c404 != res.Responses {
		t.Fatalf("codes %v, responses %d", res.Codes, res.Responses)
	}
	if res.Delivered != c204 || res.Latency.Count != c204 || res.LatencyAll.Count != res.Responses {
		t.Errorf("delivered %d, latency samples %d/%d, 2.04 %d, responses %d",
			res.Delivered, res.Latency.Count, res.LatencyAll.Count, c204, res.Responses)
	}
	// MIDs increment, so the three codes come in near-equal shares.
	for _, n := range []uint64{c503, c404} {
		if !near(n, c204, res.Responses/10+16) {
			t.Errorf("codes %v: want near-equal shares", res.Codes)
		}
	}
}

func TestGatewaySampling(t *testing.T) {
	r := startResponder(t, respPiggyback)
	cfg := testConfig(r.addr())
	cfg.GatewayPID = os.Getpid() // this process plays the gateway
	cfg.GatewayPort = r.conn.LocalAddr().(*net.UDPAddr).Port
	res := run(t, cfg)
	g := res.Gateway
	if g == nil {
		t.Fatal("no gateway sample")
	}
	if g.PID != cfg.GatewayPID || g.VmHWMKiB == 0 || g.VmRSSKiB == 0 || g.VmHWMKiB < g.VmRSSKiB || g.Threads < 1 {
		t.Errorf("gateway sample %+v", g)
	}
	if g.CPUS < 0 || g.CPUS > 2*cfg.Duration.Seconds()*float64(res.GOMAXPROCS)+0.1 {
		t.Errorf("gateway CPU %v s over a %v window", g.CPUS, cfg.Duration)
	}
	if g.PortSocketDrops != 0 || res.Loadgen.SocketDrops != 0 {
		t.Errorf("socket drops: gateway port %d, load generator %d", g.PortSocketDrops, res.Loadgen.SocketDrops)
	}
	var buf bytes.Buffer
	if err := res.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatalf("JSON output does not parse: %v", err)
	}
	for _, k := range []string{"delivered_per_s", "latency_2_04", "gateway", "codes", "lost", "retransmissions"} {
		if _, ok := back[k]; !ok {
			t.Errorf("JSON output lacks %q", k)
		}
	}
	var text bytes.Buffer
	res.WriteText(&text)
	if !strings.Contains(text.String(), "peak RSS") {
		t.Errorf("text output lacks the gateway's peak RSS:\n%s", text.String())
	}
}

func TestInterrupted(t *testing.T) {
	r := startResponder(t, respPiggyback)
	cfg := testConfig(r.addr())
	cfg.Duration = time.Minute
	ctx, cancel := context.WithTimeout(t.Context(), cfg.Warmup+200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, cfg)
	if err == nil || res == nil || !res.Interrupted || res.Delivered == 0 {
		t.Fatalf("Run = %+v, %v; want a partial result and the context's error", res, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Run took %v after cancel", d)
	}
	if res.ElapsedS > 1 {
		t.Errorf("elapsed %v s, want the time until cancel", res.ElapsedS)
	}
}

func TestValidate(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	cfg.Devices, cfg.Inflight, cfg.TokenLen, cfg.Type, cfg.Target = 0, 0, 9, "a/b", "nope"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"devices", "inflight", "token-len", "type", "target"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if _, err := Run(t.Context(), cfg); err == nil {
		t.Error("Run accepted an invalid config")
	}

	for _, c := range []struct{ method, path, want string }{
		{"get", "", "method"},
		{"", "", "method"},
		{"post", "example_data", "must start with /"},
		{"put", "/", "segment"},
		{"put", "/a//b", "segment"},
		{"put", "/a/b c", "segment"},
	} {
		cfg := DefaultConfig()
		cfg.Method, cfg.Path = c.method, c.path
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("method %q path %q: error %v, want one mentioning %q", c.method, c.path, err, c.want)
		}
	}
	for _, c := range []struct{ method, path string }{{"PUT", "/example_data"}, {"post", "/a/b"}, {"put", ""}} {
		cfg := DefaultConfig()
		cfg.Method, cfg.Path = c.method, c.path
		if err := cfg.Validate(); err != nil {
			t.Errorf("method %q path %q: %v", c.method, c.path, err)
		}
	}
}
