package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
)

// startGWNofile is startGW with the gateway's RLIMIT_NOFILE (soft and hard, so that Go's raise at
// start cannot lift it) lowered to nofile by a shell wrapper that execs the binary.
func startGWNofile(t *testing.T, nofile int, dataDir string, extra ...string) *gw {
	t.Helper()
	wrapper := filepath.Join(t.TempDir(), "coapgw-nofile")
	script := fmt.Sprintf("#!/bin/sh\nulimit -n %d || exit 70\nexec %q \"$@\"\n", nofile, binPath)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	real := binPath
	binPath = wrapper
	defer func() { binPath = real }()
	return startGW(t, dataDir, extra...)
}

// openFDs is how many descriptors process pid holds.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return len(ents)
}

// holdHTTP opens n connections to addr and keeps them open until the test ends: the first
// keepAlive make one request each and then idle on the keep-alive connection, every other one
// of the rest sends half a request header and stalls (a slow client), the others send nothing.
func holdHTTP(t *testing.T, addr string, n, keepAlive int) {
	t.Helper()
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		switch {
		case i < keepAlive:
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("keep-alive request %d: %v", i, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		case i%2 == 0:
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n", addr)
		}
	}
}

// readyzJSON decodes /readyz's answer into v, ready (200) or not (503: its fields are there too),
// and returns the status code.
func readyzJSON(t *testing.T, g *gw, v any) int {
	t.Helper()
	resp, err := http.Get("http://" + g.http + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("/readyz %d: %v", resp.StatusCode, err)
	}
	return resp.StatusCode
}

// TestHTTPCannotStarveSpool (issue 11, finding 1): under RLIMIT_NOFILE 64, 100 idle, keep-alive
// and slow HTTP connections are held open; every CoAP POST still gets 2.04 (before, the
// connections took every descriptor and the spool's first append failed to open cursor.tmp:
// 5.03 "storage unavailable"), the records are in the spool, and HTTP answers again once the
// connections go.
func TestHTTPCannotStarveSpool(t *testing.T) {
	const nofile = 64
	dir := t.TempDir()
	g := startGWNofile(t, nofile, dir)
	pid := g.cmd.Process.Pid
	holdHTTP(t, g.http, 100, 5)
	// The gateway accepts what it will; wait until it holds what the cap allows (the reserve
	// left), then give it a moment to try for more.
	waitFor(t, "the gateway to accept connections", func() bool { return openFDs(t, pid) >= nofile-40 })
	time.Sleep(300 * time.Millisecond)
	held := openFDs(t, pid)
	t.Logf("the gateway holds %d descriptors of %d", held, nofile)

	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const posts = 20
	for i := range posts {
		resp, err := c.Post(fmt.Sprintf("/sensor/dev-%d", i), fmt.Sprintf(`{"i":%d}`, i))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code != coapmsg.Changed {
			t.Fatalf("POST %d with %d descriptors held under RLIMIT_NOFILE %d: %v %q\n%s", i, held, nofile, resp.Code, resp.Payload, g.stderr)
		}
	}
	if held > nofile-8 {
		t.Fatalf("the gateway held %d descriptors of %d: no reserve left", held, nofile)
	}
	if !strings.Contains(g.stderr.String(), "http connections capped") {
		t.Fatalf("the lowered cap is not logged:\n%s", g.stderr)
	}
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("exit: %v\n%s", err, g.stderr)
	}
	if recs := spoolRecords(t, dir); len(recs) != posts {
		t.Fatalf("spool has %d records, %d were acknowledged", len(recs), posts)
	}
}

// TestHTTPIdleAndSlowConnectionsClosed (issue 11, finding 1): a keep-alive connection left idle
// and a client sending its header or its body too slowly are disconnected after
// --http-idle-timeout and --http-read-timeout, while /readyz keeps answering.
func TestHTTPIdleAndSlowConnectionsClosed(t *testing.T) {
	// Through the environment, as an operator's settings may come.
	t.Setenv("COAPGW_HTTP_IDLE_TIMEOUT", "1s")
	t.Setenv("COAPGW_HTTP_READ_TIMEOUT", "1s")
	g := startGW(t, t.TempDir())
	dial := func() net.Conn {
		c, err := net.Dial("tcp", g.http)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	idle, slowHeader, slowBody := dial(), dial(), dial()
	fmt.Fprintf(idle, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", g.http)
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fmt.Fprintf(slowHeader, "GET /healthz HTTP/1.1\r\nHost: %s\r\n", g.http)
	fmt.Fprintf(slowBody, "POST /api/things HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000\r\n\r\n{", g.http)

	start := time.Now()
	for name, c := range map[string]net.Conn{"idle keep-alive": idle, "slow header": slowHeader, "slow body": slowBody} {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		var r io.Reader = c
		if c == idle {
			r = br
		}
		// A slow body may get an error answer before the close; read to the end either way.
		if _, err := io.Copy(io.Discard, r); err != nil {
			t.Fatalf("%s connection: not closed by the gateway: %v", name, err)
		}
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("connections closed after %v", d)
	}
	if code, body := readyz(t, g); code != http.StatusOK {
		t.Fatalf("/readyz %d %s", code, body)
	}
}

// TestReadyzWhileAppendsFail (issue 11, finding 2): with the spool full, every POST gets 5.03
// and /readyz answers 503 with the reason, and the failures are logged once, not once per
// request.
func TestReadyzWhileAppendsFail(t *testing.T) {
	g := startGW(t, t.TempDir(), "--spool-max-bytes", "65536", "--spool-segment-bytes", "65536", "--retry-after", "60s")
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pad := strings.Repeat("x", 900)
	failed := 0
	for i := 0; i < 200 && failed < 10; i++ {
		resp, err := c.Post("/fill/dev-1", fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad))
		if err != nil {
			t.Fatal(err)
		}
		switch resp.Code {
		case coapmsg.Changed:
			if failed > 0 {
				t.Fatalf("2.04 after the spool filled (request %d)", i)
			}
		case coapmsg.ServiceUnavailable:
			failed++
		default:
			t.Fatalf("unexpected %v", resp.Code)
		}
	}
	if failed < 10 {
		t.Fatal("a 64 KiB spool never filled")
	}
	code, body := readyz(t, g)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "spool full") {
		t.Fatalf("/readyz while every append fails: %d %s", code, body)
	}
	if n := strings.Count(g.stderr.String(), "level=WARN"); n != 1 {
		t.Fatalf("%d WARN lines for %d failed appends, want 1:\n%s", n, failed, g.stderr)
	}
}
