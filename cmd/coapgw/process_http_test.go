package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/awstest"
)

// TestProcessHTTPLimits (issue 11): `coapgw process`'s operations server has the limits of
// serve's — --http-read-timeout, --http-idle-timeout and --http-max-conns are its flags too and
// are in force: a client sending its header too slowly and an idle keep-alive connection are
// disconnected, and the connection cap is the one asked for.
func TestProcessHTTPLimits(t *testing.T) {
	m := awstest.Start(t)
	awsEnv(t)
	queue := m.CreateQueue(t.Context(), "coapgw-limits", nil)
	addr := fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	log := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"process", "--queue", queue, "--sink", "awsiot", "--aws-endpoint", m.Endpoint(),
			"--http-addr", addr, "--wait-time", "1s",
			"--http-read-timeout", "1s", "--http-idle-timeout", "1s", "--http-max-conns", "7"}, io.Discard, log)
	}()
	defer func() {
		cancel()
		if c := <-code; c != 0 {
			t.Errorf("exit code %d\n%s", c, log)
		}
	}()
	var metrics string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			metrics = string(b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process's /metrics not answering: %v\n%s", err, log)
		}
	}
	if !strings.Contains(metrics, "\ncoapgw_http_max_connections 7\n") {
		t.Errorf("coapgw_http_max_connections is not 7:\n%s", grepLines(metrics, "coapgw_http_"))
	}

	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	idle, slow := dial(), dial()
	fmt.Fprintf(idle, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fmt.Fprintf(slow, "GET /healthz HTTP/1.1\r\nHost: %s\r\n", addr) // the header never ends
	start := time.Now()
	for name, r := range map[string]io.Reader{"idle keep-alive": br, "slow header": slow} {
		c := idle
		if name == "slow header" {
			c = slow
		}
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.Copy(io.Discard, r); err != nil {
			t.Fatalf("%s connection not closed by the server: %v", name, err)
		}
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("connections closed after %v", d)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
