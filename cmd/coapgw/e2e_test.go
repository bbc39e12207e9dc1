package main

// End-to-end tests: the real binary, real UDP on loopback, the real spool on disk, libcoap's client.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "coapgw-e2e")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "coapgw")
	out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build coapgw: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// gw is a gateway process started by a test.
type gw struct {
	t       testing.TB
	cmd     *exec.Cmd
	dataDir string
	coap    netip.AddrPort
	http    string
	stderr  *syncBuffer
	done    chan error
}

func freeUDPPort(t testing.TB) int {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func freeTCPPort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startGW starts the binary on free loopback ports with dataDir, and waits for /readyz. The
// processor is off (--process none) so the spool keeps every record for inspection; tests of
// local mode pass --process local in extra.
func startGW(t testing.TB, dataDir string, extra ...string) *gw {
	t.Helper()
	return startGWAt(t, dataDir, 0, extra...)
}

// startGWAt is startGW with the HTTP server on every interface at httpPort (0: on loopback
// at a free port); the test still reaches it over loopback.
func startGWAt(t testing.TB, dataDir string, httpPort int, extra ...string) *gw {
	t.Helper()
	return startBinGW(t, binPath, dataDir, httpPort, extra...)
}

// startBinGW is startGWAt for the coapgw binary bin (one built with other flags).
func startBinGW(t testing.TB, bin, dataDir string, httpPort int, extra ...string) *gw {
	t.Helper()
	g := &gw{t: t, dataDir: dataDir, stderr: &syncBuffer{}, done: make(chan error, 1)}
	g.coap = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(freeUDPPort(t)))
	listen := ""
	if httpPort == 0 {
		g.http = fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
		listen = g.http
	} else {
		g.http = fmt.Sprintf("127.0.0.1:%d", httpPort)
		listen = fmt.Sprintf("0.0.0.0:%d", httpPort)
	}
	args := append([]string{"serve", "--data-dir", dataDir, "--gateway-id", "gw-e2e", "--process", "none"}, extra...)
	g.cmd = exec.Command(bin, args...)
	// Addresses go through the environment, as an operator's would.
	g.cmd.Env = append(os.Environ(), "COAPGW_COAP_ADDR="+g.coap.String(), "COAPGW_HTTP_ADDR="+listen)
	g.cmd.Stderr = g.stderr
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.done <- g.cmd.Wait() }()
	t.Cleanup(func() {
		if g.cmd.ProcessState == nil {
			g.cmd.Process.Kill()
			<-g.done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + g.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return g
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready: %v\n%s", err, g.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (g *gw) stop(sig syscall.Signal) error {
	g.cmd.Process.Signal(sig)
	select {
	case err := <-g.done:
		return err
	case <-time.After(20 * time.Second):
		g.t.Fatalf("gateway did not exit after %v", sig)
		return nil
	}
}

type spooled struct {
	Seq     uint64          `json:"seq"`
	GW      string          `json:"gw"`
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Payload json.RawMessage `json:"payload"`
}

// spoolRecords runs `coapgw spool --all` on dataDir.
func spoolRecords(t *testing.T, dataDir string) []spooled {
	t.Helper()
	cmd := exec.Command(binPath, "spool", "--all", "--data-dir", dataDir)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("coapgw spool: %v\n%s", err, errb.String())
	}
	var recs []spooled
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r spooled
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("bad spool line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	return recs
}

func TestPostHealthWellKnownMetrics(t *testing.T) {
	dir := t.TempDir()
	g := startGW(t, dir)
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Post("/sensor/dev-1", `{"temp":21.5}`)
	if err != nil || resp.Code != coapmsg.Changed || resp.Type != coapmsg.Acknowledgement {
		t.Fatalf("POST: %v %+v", err, resp)
	}
	// A retransmission of the same CON gets the same answer and is stored once.
	req := c.Request(coapmsg.Confirmable, coapmsg.POST, "/sensor/dev-2", []byte(`{"n":1}`))
	for i := 0; i < 3; i++ {
		resp, err := c.Do(req)
		if err != nil || resp.Code != coapmsg.Changed || resp.MID != req.MID {
			t.Fatalf("duplicate %d: %v %+v", i, err, resp)
		}
	}
	resp, err = c.Get("/health")
	if err != nil || resp.Code != coapmsg.Content || !strings.Contains(string(resp.Payload), `"spool_depth":2`) {
		t.Fatalf("health: %v %+v %s", err, resp, resp.Payload)
	}
	resp, err = c.Get("/.well-known/core")
	if err != nil || resp.Code != coapmsg.Content || string(resp.Payload) != `</health>;rt="coapgw.health";ct=50` {
		t.Fatalf("well-known: %v %+v", err, resp)
	}
	resp, err = c.Post("/bad type/x", `{}`)
	if err != nil || resp.Code != coapmsg.BadRequest {
		t.Fatalf("bad name: %v %+v", err, resp)
	}
	// Ping.
	r, err := c.DoRaw([]byte{0x40, 0, 0xbe, 0xef}, 0xbeef, nil)
	if err != nil || r.Type != coapmsg.Reset {
		t.Fatalf("ping: %v %+v", err, r)
	}
	mresp, err := http.Get("http://" + g.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{
		`coapgw_coap_datagrams_total{disposition="duplicate"} 2`,
		`coapgw_coap_datagrams_total{disposition="ping"} 1`,
		`coapgw_coap_responses_total{code="2.04"} 4`,
		`coapgw_coap_responses_total{code="4.00"} 1`,
		`coapgw_spool_appended_records_total 2`,
		`coapgw_spool_fsync_duration_seconds_count`,
		`coapgw_udp_receive_buffer_drops_total 0`,
		`coapgw_ingest_records_total{result="accepted"} 2`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, g.stderr)
	}
	recs := spoolRecords(t, dir)
	if len(recs) != 2 || recs[0].ID != "dev-1" || recs[1].ID != "dev-2" || string(recs[0].Payload) != `{"temp":21.5}` || recs[0].GW != "gw-e2e" {
		t.Fatalf("spool holds %+v", recs)
	}
}

// TestLibcoapClient talks to the gateway with libcoap's coap-client.
func TestLibcoapClient(t *testing.T) {
	bin, err := exec.LookPath("coap-client-notls")
	if err != nil {
		if os.Getenv("COAPGW_REQUIRE_PEERS") != "" {
			t.Fatal("coap-client-notls not installed (Debian libcoap3-bin)")
		}
		t.Skip("coap-client-notls not installed; scripts/test.sh installs it")
	}
	dir := t.TempDir()
	g := startGW(t, dir)
	uri := func(p string) string { return fmt.Sprintf("coap://%s%s", g.coap, p) }
	run := func(args ...string) string {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("coap-client %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("-m", "post", "-t", "50", "-e", `{"temp":21.5}`, uri("/sensor/dev-1"))
	run("-m", "put", "-e", `{"temp":22}`, uri("/sensor/dev-1"))
	run("-N", "-m", "post", "-e", `{"non":true}`, uri("/sensor/dev-2"))
	if out := run("-m", "get", uri("/.well-known/core")); !strings.Contains(out, `</health>;rt="coapgw.health";ct=50`) {
		t.Fatalf("well-known/core via coap-client: %q", out)
	}
	if out := run("-m", "get", uri("/health")); !strings.Contains(out, `"status":"ok"`) {
		t.Fatalf("health via coap-client: %q", out)
	}
	out := run("-m", "post", "-e", `{"temp":`, uri("/sensor/dev-3"))
	if !strings.Contains(out, "4.00") {
		t.Fatalf("invalid JSON via coap-client: %q", out)
	}
	out = run("-m", "post", "-t", "41", "-e", `<a/>`, uri("/sensor/dev-3"))
	if !strings.Contains(out, "4.15") {
		t.Fatalf("XML via coap-client: %q", out)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	recs := spoolRecords(t, dir)
	if len(recs) != 3 {
		t.Fatalf("spool has %d records, want 3: %+v", len(recs), recs)
	}
	got := []string{string(recs[0].Payload), string(recs[1].Payload), string(recs[2].Payload)}
	want := []string{`{"temp":21.5}`, `{"temp":22}`, `{"non":true}`}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("spooled payloads %q, want %q", got, want)
		}
	}
}

// load runs devices that POST unique payloads until stop closes, recording each payload that got
// 2.04 in acked. Every request is a fresh CON retried with the same MID, as a device would.
func load(t *testing.T, addr netip.AddrPort, tag string, devices int, stop <-chan struct{}) (acked map[string]bool, codes map[coapmsg.Code]int) {
	var mu sync.Mutex
	acked = map[string]bool{}
	codes = map[coapmsg.Code]int{}
	var wg sync.WaitGroup
	for d := 0; d < devices; d++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := coaptest.Dial(addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.Timeout = 300 * time.Millisecond
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				p := fmt.Sprintf(`{"tag":%q,"d":%d,"n":%d}`, tag, d, n)
				resp, err := c.Post(fmt.Sprintf("/load/dev-%d", d), p)
				if err != nil {
					continue // timeout: the gateway is gone or busy; nothing was promised
				}
				mu.Lock()
				codes[resp.Code]++
				if resp.Code == coapmsg.Changed {
					acked[p] = true
				}
				mu.Unlock()
			}
		}()
	}
	go func() { <-stop; wg.Wait() }()
	<-stop
	wg.Wait()
	return acked, codes
}

// TestKill9 kills the gateway with SIGKILL under load, several times: every payload that got a 2.04
// must be in the spool afterwards.
func TestKill9(t *testing.T) {
	dir := t.TempDir()
	for round := 0; round < 4; round++ {
		g := startGW(t, dir)
		stop := make(chan struct{})
		var acked map[string]bool
		done := make(chan struct{})
		go func() { acked, _ = load(t, g.coap, fmt.Sprint("round-", round), 16, stop); close(done) }()
		time.Sleep(time.Duration(200+rand.IntN(400)) * time.Millisecond)
		g.cmd.Process.Signal(syscall.SIGKILL)
		<-g.done
		close(stop)
		<-done
		if len(acked) == 0 {
			t.Fatalf("round %d: no request acknowledged before the kill", round)
		}
		stored := map[string]int{}
		recs := spoolRecords(t, dir)
		for _, r := range recs {
			stored[string(r.Payload)]++
		}
		lost := 0
		for p := range acked {
			if stored[p] == 0 {
				lost++
			}
		}
		if lost > 0 {
			t.Fatalf("round %d: %d of %d acknowledged records lost after kill -9", round, lost, len(acked))
		}
		for i := 1; i < len(recs); i++ {
			if recs[i].Seq <= recs[i-1].Seq {
				t.Fatalf("round %d: seq %d after %d: sequence numbers reused after restart", round, recs[i].Seq, recs[i-1].Seq)
			}
		}
		t.Logf("round %d: %d acknowledged, all in the spool (%d records on disk)", round, len(acked), len(recs))
	}
}

// TestGracefulShutdownUnderLoad: SIGTERM while devices post; nothing acknowledged is lost, and the
// process exits cleanly.
func TestGracefulShutdownUnderLoad(t *testing.T) {
	dir := t.TempDir()
	g := startGW(t, dir)
	stop := make(chan struct{})
	var acked map[string]bool
	var codes map[coapmsg.Code]int
	done := make(chan struct{})
	go func() { acked, codes = load(t, g.coap, "term", 16, stop); close(done) }()
	time.Sleep(400 * time.Millisecond)
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, g.stderr)
	}
	close(stop)
	<-done
	stored := map[string]bool{}
	for _, r := range spoolRecords(t, dir) {
		stored[string(r.Payload)] = true
	}
	for p := range acked {
		if !stored[p] {
			t.Fatalf("acknowledged %s lost in graceful shutdown", p)
		}
	}
	if len(acked) == 0 {
		t.Fatal("nothing acknowledged")
	}
	t.Logf("acked %d, codes %v", len(acked), codes)
}

// TestSpoolFullAnswers503 fills a small spool: devices get 5.03 with Max-Age, nothing is acknowledged
// that was not stored, and everything acknowledged is on disk.
func TestSpoolFullAnswers503(t *testing.T) {
	dir := t.TempDir()
	g := startGW(t, dir, "--spool-max-bytes", "65536", "--spool-segment-bytes", "65536")
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pad := strings.Repeat("x", 900)
	var acked []string
	var got503 bool
	for i := 0; i < 200 && !got503; i++ {
		p := fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad)
		resp, err := c.Post("/fill/dev-1", p)
		if err != nil {
			t.Fatal(err)
		}
		switch resp.Code {
		case coapmsg.Changed:
			acked = append(acked, p)
		case coapmsg.ServiceUnavailable:
			got503 = true
			if v, ok := resp.Option(coapmsg.MaxAge); !ok || len(v) == 0 {
				t.Fatal("5.03 without Max-Age")
			}
		default:
			t.Fatalf("unexpected %v", resp.Code)
		}
	}
	if !got503 {
		t.Fatal("a 64 KiB spool never filled")
	}
	if resp, err := c.Get("/health"); err != nil || resp.Code != coapmsg.Content {
		t.Fatalf("health while full: %v %+v", err, resp)
	}
	g.stop(syscall.SIGTERM)
	recs := spoolRecords(t, dir)
	if len(recs) != len(acked) {
		t.Fatalf("spool has %d records, %d were acknowledged", len(recs), len(acked))
	}
}

// TestOversizedOverUDP (TESTPLAN A8): payloads over --max-payload, in datagrams the gateway reads
// whole and in ones longer than it reads at all, get 4.13 with Size1 over real UDP, and nothing of
// them is stored; a NON that is too long gets no answer.
func TestOversizedOverUDP(t *testing.T) {
	dir := t.TempDir()
	g := startGW(t, dir)
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, size := range []int{8193, 9000, 20_000, 60_000} { // the read buffer is 16 KiB + 1
		resp, err := c.Post("/big/dev-1", `{"pad":"`+strings.Repeat("x", size-10)+`"}`)
		if err != nil {
			t.Fatalf("%d-byte payload: %v", size, err)
		}
		v, _ := resp.Option(coapmsg.Size1)
		if size1, _ := coapmsg.Uint(v); resp.Code != coapmsg.RequestEntityTooLarge || size1 != 8192 {
			t.Fatalf("%d-byte payload: %v with Size1 %d, want 4.13 with Size1 8192", size, resp.Code, size1)
		}
	}
	non := c.Request(coapmsg.NonConfirmable, coapmsg.POST, "/big/dev-1", bytes.Repeat([]byte{' '}, 30_000))
	b, _ := non.Append(nil)
	if err := c.Send(b); err != nil {
		t.Fatal(err)
	}
	if m, err := c.Read(500 * time.Millisecond); err == nil {
		t.Fatalf("an oversized NON got an answer: %+v", m)
	}
	if resp, err := c.Post("/big/dev-1", `{"ok":1}`); err != nil || resp.Code != coapmsg.Changed {
		t.Fatalf("a small post after: %v %+v", err, resp)
	}
	m := scrape(t, g)
	if n := metricValue(t, m, `coapgw_coap_datagrams_total{disposition="oversized"}`); n != 3 {
		t.Errorf("%v datagrams counted oversized, want 3 (the 20,000- and 60,000-byte CONs, the NON)", n)
	}
	g.stop(syscall.SIGTERM)
	if recs := spoolRecords(t, dir); len(recs) != 1 || string(recs[0].Payload) != `{"ok":1}` {
		t.Fatalf("spool holds %d records, want only the small one", len(recs))
	}
}

func TestCheckConfig(t *testing.T) {
	out, err := exec.Command(binPath, "--check-config", "--coap-addr", "127.0.0.1:0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "coap_addr: 127.0.0.1:0") {
		t.Fatalf("valid config: %v\n%s", err, out)
	}
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, []byte("max_payload: 0\nlog_level: loud\n"), 0o644)
	out, err = exec.Command(binPath, "--check-config", "--config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "max-payload") || !strings.Contains(string(out), "log-level") {
		t.Fatalf("invalid config accepted or not every problem reported: %v\n%s", err, out)
	}
	os.WriteFile(cfg, []byte("no_such_key: 1\n"), 0o644)
	if out, err = exec.Command(binPath, "--check-config", "--config", cfg).CombinedOutput(); err == nil {
		t.Fatalf("unknown key accepted:\n%s", out)
	}
	// Three bad values, each of another kind: all three are reported, for each role.
	for _, tc := range []struct {
		args []string
		file string
		want []string
	}{
		{[]string{"--check-config"}, "coap_addr: ':99999'\npiggyback_deadline: 1ns\nspool_max_bytes: 1KiB\nmax_payload: lots\n",
			[]string{`coap-addr ":99999": port 99999 is out of range`, "piggyback-deadline 1ns", "spool-max-bytes 1KiB", `max_payload: "lots" is not a size`}},
		{[]string{"process", "--check-config"}, "queue: https://sqs.eu-west-1.amazonaws.com/1/q\nhttp_addr: nosuchhost.invalid:8080\npollers: 0\nvisibility_timeout: 1s\n",
			[]string{`host "nosuchhost.invalid" does not resolve`, "pollers 0", "visibility-timeout 1s"}},
	} {
		os.WriteFile(cfg, []byte(tc.file), 0o644)
		out, err := exec.Command(binPath, append(tc.args, "--config", cfg)...).CombinedOutput()
		if code := exitCode(err); code != 2 {
			t.Errorf("%v: exit %d, want 2\n%s", tc.args, code, out)
		}
		for _, want := range tc.want {
			if !strings.Contains(string(out), want) {
				t.Errorf("%v: %q not reported:\n%s", tc.args, want, out)
			}
		}
	}
	// Sizes with units, as the README writes them, and the process role's valid settings.
	out, err = exec.Command(binPath, "--check-config", "--spool-max-bytes", "1GiB", "--spool-segment-bytes", "64MiB", "--socket-buffer", "8MiB").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "spool_max_bytes: 1GiB") {
		t.Fatalf("sizes with units: %v\n%s", err, out)
	}
	out, err = exec.Command(binPath, "process", "--check-config", "--queue", "https://sqs.eu-west-1.amazonaws.com/1/q").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "queue: https://sqs.eu-west-1.amazonaws.com/1/q") || strings.Contains(string(out), "coap_addr") {
		t.Fatalf("process --check-config: %v\n%s", err, out)
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

var _ = context.Background
