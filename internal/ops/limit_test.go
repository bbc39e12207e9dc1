package ops

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestConnLimit(t *testing.T) {
	for _, tc := range []struct {
		want       int
		limit      uint64
		inUse, res int
		cap        int
	}{
		{256, 0, 10, 32, 256},       // no limit known
		{256, 1 << 40, 10, 32, 256}, // unlimited
		{256, 1 << 20, 10, 32, 256}, // plenty
		{256, 64, 12, 32, 20},       // lowered: 12 + 20 + 32 = 64
		{10, 64, 12, 32, 10},        // the flag is lower still
		{256, 40, 12, 32, 1},        // never below one
	} {
		if got := connLimit(tc.want, tc.limit, tc.inUse, tc.res); got != tc.cap {
			t.Errorf("connLimit(%d, %d, %d, %d) = %d, want %d", tc.want, tc.limit, tc.inUse, tc.res, got, tc.cap)
		}
	}
}

// TestMaxConns: with MaxConns connections open, the next one is not served (it waits in the
// listen backlog, holding no descriptor of the process) until one of them closes.
func TestMaxConns(t *testing.T) {
	s := start(t, Config{MaxConns: 2})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	for deadline := time.Now().Add(10 * time.Second); s.lim.open() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections accepted, want 2", s.lim.open())
		}
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 300 * time.Millisecond}
	if resp, err := client.Get("http://" + s.Addr() + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("a third connection was served with MaxConns 2")
	}
	held[0].Close()
	client.Timeout = 10 * time.Second
	resp, err := client.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatalf("after a connection closed: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "coapgw_http_max_connections 2") {
		t.Fatalf("metrics without the cap:\n%s", b)
	}
}

// TestReadTimeoutSparesStreams: the read timeout bounds a request's body, not a long response
// to a GET (the dashboard's event stream): its context is not cancelled when it has passed.
func TestReadTimeoutSparesStreams(t *testing.T) {
	s := start(t, Config{ReadTimeout: 100 * time.Millisecond})
	s.Handle("GET /stream", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		for i := range 5 {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			fmt.Fprintf(w, "%d\n", i)
			rc.Flush()
		}
	}))
	_, body := get(t, "http://"+s.Addr()+"/stream")
	if body != "0\n1\n2\n3\n4\n" {
		t.Fatalf("stream cut off: %q", body)
	}
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("a slow body was not cut off: %v", err)
	}
}
