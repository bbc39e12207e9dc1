package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// TestMain lets the test binary stand in for the command: with COAPGW_BENCH_MAIN=1 it runs
// main, so TestBinary checks the real exit codes.
func TestMain(m *testing.M) {
	if os.Getenv("COAPGW_BENCH_MAIN") == "1" {
		main()
	}
	goleak.VerifyTestMain(m)
}

// responder is a small real CoAP server on 127.0.0.1:0: it answers every CON request with a
// piggybacked ACK 2.04 and every NON request with a NON 2.04, unless silent, and records the
// methods and paths it saw.
type responder struct {
	conn   *net.UDPConn
	silent bool
	done   chan struct{}

	mu       sync.Mutex
	requests int
	seen     map[string]int // "POST /bench/bench-0"
}

func startResponder(t *testing.T, silent bool) *responder {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &responder{conn: conn, silent: silent, done: make(chan struct{}), seen: map[string]int{}}
	go r.serve()
	t.Cleanup(func() {
		conn.Close()
		<-r.done
	})
	return r
}

func (r *responder) addr() string { return r.conn.LocalAddr().String() }

func (r *responder) serve() {
	defer close(r.done)
	buf := make([]byte, 65536)
	var m, out coapmsg.Message
	for {
		n, peer, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if m.Decode(buf[:n]) != nil || !m.Code.IsRequest() {
			continue
		}
		var path strings.Builder
		for _, o := range m.Options {
			if o.Number == coapmsg.URIPath {
				path.WriteString("/" + string(o.Value))
			}
		}
		r.mu.Lock()
		r.requests++
		method := map[coapmsg.Code]string{coapmsg.POST: "POST", coapmsg.PUT: "PUT"}[m.Code]
		if method == "" {
			method = m.Code.String()
		}
		r.seen[method+" "+path.String()]++
		r.mu.Unlock()
		if r.silent {
			continue
		}
		out = coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.Changed, MID: m.MID, Token: m.Token}
		if m.Type == coapmsg.NonConfirmable {
			out.Type, out.MID = coapmsg.NonConfirmable, m.MID+1
		}
		b, _ := out.Append(nil)
		r.conn.WriteToUDPAddrPort(b, peer)
	}
}

func (r *responder) stats() (int, map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]int{}
	for k, v := range r.seen {
		seen[k] = v
	}
	return r.requests, seen
}

// short are the flags of a short run: 4 devices, 50 ms warm-up, 300 ms window.
func short(target string, more ...string) []string {
	return append([]string{"--target", target, "--devices", "4", "--warmup", "50ms", "--duration", "300ms", "--ramp", "10ms"}, more...)
}

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(t.Context(), args, &out, &errb)
	t.Logf("coapgw-bench %s → %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
	return code, out.String(), errb.String()
}

// TestReportsResponses runs the command against a real UDP responder: exit 0, the report
// shows the delivered rate and 2.04 responses, and the responder saw POST /bench/bench-<n> from
// each of the four devices.
func TestReportsResponses(t *testing.T) {
	r := startResponder(t, false)
	code, out, _ := runCmd(t, short(r.addr())...)
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	var rate float64
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "delivered/s" {
			fmt.Sscan(f[1], &rate)
		}
	}
	if rate <= 0 || !strings.Contains(out, "codes: 2.04=") || !strings.HasPrefix(out, "coapgw-bench: CON, 4 devices") {
		t.Errorf("report lacks a positive delivered/s or the 2.04 count (rate %v):\n%s", rate, out)
	}
	n, seen := r.stats()
	if n == 0 {
		t.Fatal("the responder saw no request")
	}
	for i := range 4 {
		if seen[fmt.Sprintf("POST /bench/bench-%d", i)] == 0 {
			t.Errorf("no POST /bench/bench-%d; saw %v", i, seen)
		}
	}
	if len(seen) != 4 {
		t.Errorf("requests %v, want POST /bench/bench-0..3 only", seen)
	}
}

// TestJSONPutPath: --json prints one JSON object; --method put --path sends PUT to that path.
func TestJSONPutPath(t *testing.T) {
	r := startResponder(t, false)
	code, out, _ := runCmd(t, short(r.addr(), "--json", "--non", "--method", "put", "--path", "/example_data")...)
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	var res struct {
		Mode      string            `json:"mode"`
		Request   string            `json:"request"`
		Delivered uint64            `json:"delivered"`
		Codes     map[string]uint64 `json:"codes"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("output is not one JSON object: %v", err)
	}
	if res.Mode != "NON" || res.Request != "PUT /example_data" || res.Delivered == 0 || res.Codes["2.04"] != res.Delivered {
		t.Errorf("result %+v", res)
	}
	if _, seen := r.stats(); len(seen) != 1 || seen["PUT /example_data"] == 0 {
		t.Errorf("requests %v, want PUT /example_data only", seen)
	}
}

// TestNoResponses: a server that never answers is exit 1 with a message saying so.
func TestNoResponses(t *testing.T) {
	r := startResponder(t, true)
	code, _, stderr := runCmd(t, short(r.addr())...)
	if code != 1 || !strings.Contains(stderr, "coapgw-bench: no responses from "+r.addr()) {
		t.Errorf("exit %d, stderr %q; want 1 and no responses", code, stderr)
	}
	if n, _ := r.stats(); n == 0 {
		t.Error("no request reached the silent responder")
	}
}

func TestUsage(t *testing.T) {
	for _, c := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"help", []string{"-h"}, 0, "usage: coapgw-bench [flags]"},
		{"help lists flags", []string{"--help"}, 0, "--method"},
		{"unknown flag", []string{"--no-such-flag"}, 2, "flag provided but not defined"},
		{"argument", []string{"extra"}, 2, `coapgw-bench: unexpected arguments ["extra"]`},
		{"invalid value", []string{"--devices", "0"}, 2, "devices must be at least 1"},
		{"invalid method", []string{"--method", "get"}, 2, "method"},
		{"help lists dtls", []string{"--help"}, 0, "--fleet-key-hex"},
		{"psk without dtls", []string{"--psk", "secret"}, 2, "need --dtls"},
		{"dtls without key", []string{"--dtls"}, 2, "exactly one of psk, psk-hex and fleet-key-hex"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, stderr := runCmd(t, c.args...)
			if code != c.code || !strings.Contains(stderr, c.stderr) || out != "" {
				t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d and %q", c.args, code, out, stderr, c.code, c.stderr)
			}
		})
	}
}

// TestBinary runs the command as a process (this test binary, through main): -h exits 0, a run
// against the responder exits 0 and prints its report, a silent one exits 1.
func TestBinary(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := func(args ...string) (int, string) {
		c := exec.CommandContext(t.Context(), exe, args...)
		c.Env = append(os.Environ(), "COAPGW_BENCH_MAIN=1")
		out, err := c.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, string(out)
		case errors.As(err, &ee):
			return ee.ExitCode(), string(out)
		}
		t.Fatalf("%v: %v", args, err)
		return -1, ""
	}
	if code, out := cmd("-h"); code != 0 || !strings.Contains(out, "usage: coapgw-bench") {
		t.Errorf("-h: exit %d\n%s", code, out)
	}
	r := startResponder(t, false)
	if code, out := cmd(short(r.addr())...); code != 0 || !strings.Contains(out, "delivered/s") {
		t.Errorf("run: exit %d\n%s", code, out)
	}
	silent := startResponder(t, true)
	if code, out := cmd(short(silent.addr())...); code != 1 || !strings.Contains(out, "no responses") {
		t.Errorf("silent server: exit %d\n%s", code, out)
	}
}

// TestLibcoapExampleServer drives libcoap's example server (coap-server-notls, Debian
// libcoap3-bin) as make bench does: PUT /example_data is answered 2.04, nothing else.
func TestLibcoapExampleServer(t *testing.T) {
	bin, err := exec.LookPath("coap-server-notls")
	if err != nil {
		if os.Getenv("COAPGW_REQUIRE_PEERS") != "" {
			t.Fatal("coap-server-notls not installed (Debian libcoap3-bin)")
		}
		t.Skip("coap-server-notls not installed; scripts/test.sh installs it (libcoap3-bin)")
	}
	addr, _ := startLibcoap(t, bin)
	code, out, _ := runCmd(t, short(addr, "--method", "put", "--path", "/example_data", "--json")...)
	if code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	var res struct {
		Delivered, Responses, Lost uint64
		Codes                      map[string]uint64
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.Delivered == 0 || res.Codes["2.04"] != res.Delivered || len(res.Codes) != 1 || res.Responses != res.Delivered {
		t.Errorf("libcoap answered %+v; want 2.04 only", res)
	}
}

// TestLibcoapDTLS drives libcoap's OpenSSL example server (coap-server-openssl, Debian
// libcoap3-bin) over DTLS with its one PSK (-k) as make bench does: every device completes a real
// handshake and PUT /example_data is answered 2.04 over the sessions. With a wrong key every
// handshake fails, nothing is sent and the exit code is 1.
func TestLibcoapDTLS(t *testing.T) {
	bin, err := exec.LookPath("coap-server-openssl")
	if err != nil {
		if os.Getenv("COAPGW_REQUIRE_PEERS") != "" {
			t.Fatal("coap-server-openssl not installed (Debian libcoap3-bin)")
		}
		t.Skip("coap-server-openssl not installed; scripts/test.sh installs it (libcoap3-bin)")
	}
	_, port := startLibcoap(t, bin, "-k", "bench-secret")
	coaps := fmt.Sprintf("127.0.0.1:%d", port+1) // libcoap serves CoAPS on the next port
	type result struct {
		Sent, Delivered, Responses uint64
		Codes                      map[string]uint64
		DTLS                       *struct {
			CipherSuite string            `json:"cipher_suite"`
			Handshakes  uint64            `json:"handshakes"`
			Failures    uint64            `json:"handshake_failures"`
			Errors      map[string]uint64 `json:"handshake_errors"`
			PerSec      float64           `json:"handshakes_per_s"`
		}
	}
	dtlsRun := func(key string) (int, result, string) {
		code, out, stderr := runCmd(t, short(coaps, "--dtls", "--psk", key, "--handshake-timeout", "2s",
			"--method", "put", "--path", "/example_data", "--json")...)
		var res result
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.DTLS == nil {
			t.Fatalf("output is not a DTLS result (%v):\n%s", err, out)
		}
		return code, res, stderr
	}
	code, res, _ := dtlsRun("bench-secret")
	if code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	if d := res.DTLS; d.Handshakes != 4 || d.Failures != 0 || d.PerSec <= 0 || d.CipherSuite != "TLS_PSK_WITH_AES_128_CCM_8" {
		t.Errorf("handshakes %+v, want 4 with CCM_8", *d)
	}
	if res.Delivered == 0 || res.Codes["2.04"] != res.Delivered || len(res.Codes) != 1 || res.Responses != res.Delivered {
		t.Errorf("libcoap answered %+v over DTLS; want 2.04 only", res)
	}

	code, res, stderr := dtlsRun("wrong-secret")
	if code != 1 || !strings.Contains(stderr, "no DTLS handshake with "+coaps+" succeeded") {
		t.Errorf("wrong key: exit %d, stderr %q; want 1 and no handshake", code, stderr)
	}
	if d := res.DTLS; d.Handshakes != 0 || d.Failures != 4 || len(d.Errors) == 0 || res.Sent != 0 || res.Delivered != 0 {
		t.Errorf("wrong key: %+v, handshakes %+v; want 4 failures and nothing sent", res, *d)
	}
}

// startLibcoap starts one of libcoap's example servers (bin) on a free loopback port (it also
// listens on TCP there, and a DTLS build on the next port) with the extra arguments, and returns
// its plain CoAP address and port once it answers a CoAP ping.
func startLibcoap(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		port := freePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		ctx, cancel := context.WithCancel(context.Background())
		c := exec.CommandContext(ctx, bin, append([]string{"-A", "127.0.0.1", "-p", fmt.Sprint(port), "-v", "0"}, args...)...)
		var stderr bytes.Buffer
		c.Stdout, c.Stderr = &stderr, &stderr
		if err := c.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { c.Wait(); close(exited) }()
		stop := func() { cancel(); <-exited }
		if pingUntil(addr, exited, 5*time.Second) {
			t.Cleanup(stop)
			return addr, port
		}
		stop()
		t.Logf("%s on %s did not answer (attempt %d): %s", bin, addr, attempt+1, stderr.String())
	}
	t.Fatalf("%s did not start", bin)
	return "", 0
}

// freePort is a port free for UDP and TCP on 127.0.0.1 a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	for {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		u.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
}

// pingUntil sends CoAP pings (an empty CON) to addr until a reset comes back, the server exits
// or the time is up.
func pingUntil(addr string, exited <-chan struct{}, d time.Duration) bool {
	conn, err := net.Dial("udp4", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	ping, _ := (&coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.Empty, MID: 7}).Append(nil)
	buf := make([]byte, 64)
	var m coapmsg.Message
	for end := time.Now().Add(d); time.Now().Before(end); {
		select {
		case <-exited:
			return false
		default:
		}
		conn.Write(ping)
		conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := conn.Read(buf)
		if err == nil && m.Decode(buf[:n]) == nil && m.Type == coapmsg.Reset && m.MID == 7 {
			return true
		}
	}
	return false
}
