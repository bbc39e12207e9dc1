package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

// serve starts f's mux on a loopback server. The API is closed before the server, so that the
// server's Close does not wait for open event streams.
func (f *fixture) serve(t *testing.T) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(f.mux)
	t.Cleanup(ts.Close)
	t.Cleanup(f.api.Close)
	return ts
}

type sseEvent struct {
	name string // "" for a comment
	data string
	at   time.Time
}

// sseStream is an open /api/events response read by a goroutine into events.
type sseStream struct {
	resp   *http.Response
	events chan sseEvent
	done   chan struct{} // closed when the body ended
	err    error
}

func openEvents(t *testing.T, client *http.Client, url string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/api/events", nil)
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("open event stream: %v", err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("event stream: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	s := &sseStream{resp: resp, events: make(chan sseEvent, 1024), done: make(chan struct{})}
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-s.done
	})
	return s
}

// read starts parsing the stream; a test that wants a slow client calls it later.
func (s *sseStream) read() *sseStream {
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(s.resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					ev.at = time.Now()
					s.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				s.events <- sseEvent{data: line, at: time.Now()}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			}
		}
		s.err = sc.Err()
	}()
	return s
}

// next returns the next event named name (skipping comments and other events) within timeout.
func (s *sseStream) next(t *testing.T, name string, timeout time.Duration) sseEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-s.events:
			if ev.name == name {
				return ev
			}
		case <-s.done:
			t.Fatalf("stream ended waiting for %q (err %v)", name, s.err)
		case <-deadline:
			t.Fatalf("no %q event within %v", name, timeout)
		}
	}
}

func (s *sseStream) nextComment(t *testing.T, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-s.events:
			if ev.name == "" {
				return ev.data
			}
		case <-s.done:
			t.Fatalf("stream ended (err %v)", s.err)
		case <-deadline:
			t.Fatalf("no comment within %v", timeout)
		}
	}
}

func names(t *testing.T, ev sseEvent) []string {
	t.Helper()
	var body struct {
		Names []string `json:"names"`
	}
	if err := json.Unmarshal([]byte(ev.data), &body); err != nil {
		t.Fatalf("thing event data %q: %v", ev.data, err)
	}
	return body.Names
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestEventsThingAfterNotify(t *testing.T) {
	f := newFixture(t, Config{Coalesce: 150 * time.Millisecond})
	ts := f.serve(t)
	s := openEvents(t, ts.Client(), ts.URL).read()
	if c := s.nextComment(t, 5*time.Second); c != ": connected" {
		t.Fatalf("first comment %q", c)
	}
	if h := s.resp.Header; h.Get("Cache-Control") != "no-store" || h.Get("X-Accel-Buffering") != "no" {
		t.Errorf("headers %v", h)
	}

	f.api.Notify("sensor-1")
	first := s.next(t, "thing", 5*time.Second)
	if got := names(t, first); !slices.Equal(got, []string{"sensor-1"}) {
		t.Fatalf("names %v", got)
	}

	// Within the coalescing window, notifications merge into one event, deduplicated and sorted,
	// sent no sooner than Coalesce after the previous one.
	f.api.Notify("zeta", "alpha")
	f.api.Notify("alpha")
	f.api.Notify()
	f.api.Notify("mid")
	second := s.next(t, "thing", 5*time.Second)
	if got := names(t, second); !slices.Equal(got, []string{"alpha", "mid", "zeta"}) {
		t.Fatalf("coalesced names %v", got)
	}
	if gap := second.at.Sub(first.at); gap < 100*time.Millisecond {
		t.Errorf("events %v apart, want at least the coalescing interval", gap)
	}
	select {
	case ev := <-s.events:
		if ev.name != "" {
			t.Fatalf("unexpected extra event %+v", ev)
		}
	case <-time.After(300 * time.Millisecond):
	}
}

func TestEventsEveryClientGetsTheEvent(t *testing.T) {
	f := newFixture(t, Config{Coalesce: time.Millisecond})
	ts := f.serve(t)
	var streams []*sseStream
	for range 3 {
		s := openEvents(t, ts.Client(), ts.URL).read()
		s.nextComment(t, 5*time.Second)
		streams = append(streams, s)
	}
	f.api.Notify("d1")
	for i, s := range streams {
		if got := names(t, s.next(t, "thing", 5*time.Second)); !slices.Equal(got, []string{"d1"}) {
			t.Errorf("client %d: %v", i, got)
		}
	}
}

func TestEventsKeepAlive(t *testing.T) {
	f := newFixture(t, Config{KeepAlive: 20 * time.Millisecond})
	ts := f.serve(t)
	s := openEvents(t, ts.Client(), ts.URL).read()
	s.nextComment(t, 5*time.Second)
	if c := s.nextComment(t, 5*time.Second); c != ": keep-alive" {
		t.Fatalf("comment %q", c)
	}
}

func TestEventsBatchLargerThanBufferIsResync(t *testing.T) {
	f := newFixture(t, Config{Coalesce: time.Millisecond, ClientBuffer: 3})
	ts := f.serve(t)
	s := openEvents(t, ts.Client(), ts.URL).read()
	s.nextComment(t, 5*time.Second)
	f.api.Notify("a", "b", "c", "d")
	ev := s.next(t, "resync", 5*time.Second)
	if ev.data != "{}" {
		t.Errorf("resync data %q", ev.data)
	}
	// After the resync the client gets names again.
	f.api.Notify("e")
	if got := names(t, s.next(t, "thing", 5*time.Second)); !slices.Equal(got, []string{"e"}) {
		t.Fatalf("after resync: %v", got)
	}
}

// smallBuffers wraps a listener so that the server's socket send buffer is tiny, to make a client
// that does not read block the server's writes quickly.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

func TestEventsSlowClientGetsResync(t *testing.T) {
	const buffer = 200
	f := newFixture(t, Config{Coalesce: time.Millisecond, ClientBuffer: buffer})
	ts := httptest.NewUnstartedServer(f.mux)
	ts.Listener = smallBuffers{ts.Listener}
	ts.Start()
	t.Cleanup(ts.Close)
	t.Cleanup(f.api.Close)
	slow := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(4096)
			}
			return c, err
		},
	}}
	defer slow.CloseIdleConnections()
	s := openEvents(t, slow, ts.URL) // not reading yet: a slow client
	waitFor(t, "the client to subscribe", func() bool { return f.api.hub.clientCount() == 1 })
	var c *client
	f.api.hub.mu.Lock()
	for cl := range f.api.hub.clients {
		c = cl
	}
	f.api.hub.mu.Unlock()

	// Keep announcing distinct, long names until the server, blocked on the full socket, has
	// given up on the backlog. Its backlog never holds more than the buffer.
	long := strings.Repeat("x", 100)
	sent := 0
	waitFor(t, "the backlog to overflow into a resync", func() bool {
		batch := make([]string, 50)
		for i := range batch {
			batch[i] = fmt.Sprintf("%s-%d", long, sent)
			sent++
		}
		f.api.Notify(batch...)
		time.Sleep(3 * time.Millisecond)
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.n > buffer {
			t.Fatalf("backlog %d names, buffer %d", c.n, buffer)
		}
		return c.resync
	})
	t.Logf("resync after %d names announced", sent)

	// The client reads again: after the events that were in flight it gets the resync.
	s.read()
	s.next(t, "resync", 10*time.Second)
}

func TestEventsCloseEndsStreams(t *testing.T) {
	f := newFixture(t, Config{})
	ts := f.serve(t)
	var streams []*sseStream
	for range 2 {
		s := openEvents(t, ts.Client(), ts.URL).read()
		s.nextComment(t, 5*time.Second)
		streams = append(streams, s)
	}
	f.api.Close()
	f.api.Close() // idempotent
	for i, s := range streams {
		select {
		case <-s.done:
			if s.err != nil {
				t.Errorf("stream %d ended with %v, want a clean end", i, s.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("stream %d still open after Close", i)
		}
	}
	waitFor(t, "handlers to return", func() bool { return f.api.hub.clientCount() == 0 })

	// New streams are refused; the rest of the API works; Notify is a no-op.
	resp, err := ts.Client().Get(ts.URL + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("after Close: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	f.api.Notify("x")
	if r := f.get(t, "/api/things"); r.code != 200 {
		t.Fatalf("list after Close: %d", r.code)
	}

	// http.Server.Shutdown with Close registered on it returns at once despite streams.
	f2 := newFixture(t, Config{})
	srv := &http.Server{Handler: f2.mux}
	srv.RegisterOnShutdown(f2.api.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ln) }()
	s := openEvents(t, http.DefaultClient, "http://"+ln.Addr().String()).read()
	s.nextComment(t, 5*time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	<-serveDone
	<-s.done
}

func TestEventsClientLimitAndDisconnect(t *testing.T) {
	f := newFixture(t, Config{MaxClients: 1})
	ts := f.serve(t)
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/api/events", nil)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitFor(t, "subscribe", func() bool { return f.api.hub.clientCount() == 1 })

	second, err := ts.Client().Get(ts.URL + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(second.Body)
	second.Body.Close()
	if second.StatusCode != 503 || second.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "too many") {
		t.Fatalf("over the limit: %d %s", second.StatusCode, body)
	}

	cancel() // the browser tab closes
	waitFor(t, "the handler to notice the disconnect", func() bool { return f.api.hub.clientCount() == 0 })
	s := openEvents(t, ts.Client(), ts.URL).read()
	s.nextComment(t, 5*time.Second)
}

func TestNotifyWithoutClientsKeepsNothing(t *testing.T) {
	f := newFixture(t, Config{})
	for i := range 10000 {
		f.api.Notify(fmt.Sprint(i))
	}
	f.api.hub.mu.Lock()
	defer f.api.hub.mu.Unlock()
	if len(f.api.hub.pending) != 0 || f.api.hub.timer != nil {
		t.Fatalf("pending %d timer %v", len(f.api.hub.pending), f.api.hub.timer)
	}
}

func TestNotifyPendingIsBounded(t *testing.T) {
	f := newFixture(t, Config{Coalesce: time.Hour, ClientBuffer: 10})
	c, err := f.api.hub.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	f.api.hub.lastFlush = time.Now() // the next flush is an hour away
	for i := range 10000 {
		f.api.Notify(fmt.Sprint(i))
	}
	f.api.hub.mu.Lock()
	pending, overflow := len(f.api.hub.pending), f.api.hub.overflow
	f.api.hub.mu.Unlock()
	if pending > 10 || !overflow {
		t.Fatalf("pending %d overflow %v", pending, overflow)
	}
	f.api.hub.flush()
	if names, resync := c.take(); !resync || names != nil {
		t.Fatalf("after overflow: %v %v", names, resync)
	}
	f.api.hub.unsubscribe(c)
}

// BenchmarkNotify is the cost to the processor of announcing one applied batch of 100 things
// with 10 dashboards open (the flush runs on the timer's goroutine, off this path).
func BenchmarkNotify(b *testing.B) {
	h := newHub(time.Hour, 1000, 256)
	for range 10 {
		if _, err := h.subscribe(); err != nil {
			b.Fatal(err)
		}
	}
	names := make([]string, 100)
	for i := range names {
		names[i] = fmt.Sprintf("thing-%04d", i)
	}
	b.ReportAllocs()
	for b.Loop() {
		h.notify(names)
	}
	h.close()
}

// BenchmarkFlush is the timer-side cost of handing a batch of 100 names to 10 clients.
func BenchmarkFlush(b *testing.B) {
	h := newHub(time.Hour, 1000, 256)
	var clients []*client
	for range 10 {
		c, _ := h.subscribe()
		clients = append(clients, c)
	}
	names := make([]string, 100)
	for i := range names {
		names[i] = fmt.Sprintf("thing-%04d", i)
	}
	b.ReportAllocs()
	for b.Loop() {
		h.mu.Lock()
		for _, n := range names {
			h.pending[n] = struct{}{}
		}
		h.mu.Unlock()
		h.flush()
		for _, c := range clients {
			c.take()
		}
	}
	h.close()
}
