package coapserver

import (
	"bytes"
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeClock is an Endpoint clock that a test advances while the endpoint's goroutines read it.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time { return time.Unix(0, c.ns.Load()) }

// advanceUntil moves the clock on by step every millisecond until cond holds, failing the test
// after 10 s of real time.
func (c *fakeClock) advanceUntil(t *testing.T, step time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		c.ns.Add(int64(step))
		time.Sleep(time.Millisecond)
	}
}

// tinyRequest is a 20-byte CON POST /ab/cd with an 8-byte token and payload "x": its separate
// 2.04 is 12 bytes, and empty ACK + 5 transmissions (RFC 7252 defaults) would be 64 bytes.
var tinyRequest = []byte{0x48, 0x02, 0x12, 0x34, 1, 2, 3, 4, 5, 6, 7, 8, 0xb2, 'a', 'b', 0x02, 'c', 'd', 0xff, 'x'}

// TestUDPSeparateResponseWithinAmplification: RFC 7252 §11.3 — on a real socket, a slow handler
// forces an empty ACK and a separate CON response that the client never acknowledges; all the
// client receives for its 20-byte request, retransmissions included, stays within 3 times it.
// The endpoint runs on a fake clock that the test moves on until the response is given up.
func TestUDPSeparateResponseWithinAmplification(t *testing.T) {
	if len(tinyRequest) != 20 {
		t.Fatalf("request of %d bytes", len(tinyRequest))
	}
	h := &deferHandler{}
	s, err := New(Config{Addr: "127.0.0.1:0", Exchange: Options{PiggybackDeadline: 20 * time.Millisecond}}, h, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{}
	clk.ns.Store(time.Unix(1000, 0).UnixNano())
	s.ep.clock = clk.now
	s.ep.epoch = clk.now()
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Serve(context.Background()); close(done) }()
	t.Cleanup(func() { s.Close(); <-done })

	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(s.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got [][]byte
	read := func(timeout time.Duration) bool {
		buf := make([]byte, 2048)
		c.SetReadDeadline(time.Now().Add(timeout))
		n, err := c.Read(buf)
		if err != nil {
			return false
		}
		got = append(got, buf[:n])
		return true
	}
	if _, err := c.Write(tinyRequest); err != nil {
		t.Fatal(err)
	}
	m := s.ep.m
	clk.advanceUntil(t, 10*time.Millisecond, func() bool { return testutil.ToFloat64(m.emptyAcks) == 1 })
	if !read(5*time.Second) || !bytes.Equal(got[0], []byte{0x60, 0, 0x12, 0x34}) {
		t.Fatalf("want the empty ACK, got %x", got)
	}
	h.release(coapmsg.Changed) // the handler has it: the empty ACK went out after ServeCoAP returned
	if !read(5 * time.Second) {
		t.Fatal("no separate response")
	}
	if sep := dec(t, got[1]); sep.Type != coapmsg.Confirmable || sep.Code != coapmsg.Changed || !bytes.Equal(sep.Token, tinyRequest[4:12]) {
		t.Fatalf("separate response %v %v %x", sep.Type, sep.Code, sep.Token)
	}
	// Never acknowledged: retransmitted until given up (MAX_TRANSMIT_WAIT, under 93 s).
	clk.advanceUntil(t, 100*time.Millisecond, func() bool { return testutil.ToFloat64(m.separateGaveUp) == 1 })
	for read(time.Second) {
	}
	total := 0
	for _, b := range got {
		total += len(b)
	}
	if total > MaxAmplification*len(tinyRequest) {
		t.Fatalf("%d datagrams, %d bytes for a %d-byte request: over %d×", len(got), total, len(tinyRequest), MaxAmplification)
	}
	if len(got) < 3 {
		t.Fatalf("%d datagrams: the separate response was never retransmitted, though the bound allows it", len(got))
	}
	t.Logf("%d datagrams, %d bytes for a %d-byte request", len(got), total, len(tinyRequest))
}

// verifyingHandler defers every request, calling PeerVerified first when verify is set.
type verifyingHandler struct {
	deferHandler
	verify bool
}

func (h *verifyingHandler) ServeCoAP(w *ResponseWriter, r *Request) {
	if h.verify {
		w.PeerVerified()
	}
	h.deferHandler.ServeCoAP(w, r)
}

// TestSeparateResponseAmplificationVerified: the amplification bound on separate responses holds
// only for unverified peers. A DTLS session (an Identity) or a peer the handler verified (Echo)
// gets all MAX_RETRANSMIT retransmissions of the separate response to a 20-byte request; a plain
// one gets 3 (counted as limited), and a separate response that would not fit even once is not
// sent at all. On the endpoint's fake clock.
func TestSeparateResponseAmplificationVerified(t *testing.T) {
	cases := []struct {
		name         string
		identity     string
		verify       bool
		payload      []byte
		sends        int // separate response and its retransmissions
		limited      float64
		withinBounds bool
	}{
		{"plain", "", false, nil, 4, 1, true},
		{"DTLS identity", "sensor/dev-1", false, nil, 5, 0, false},
		{"Echo verified", "", true, nil, 5, 0, false},
		{"plain, too long to send once", "", false, bytes.Repeat([]byte{'x'}, 50), 0, 1, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &verifyingHandler{verify: c.verify}
			s := &fakeSender{}
			m := NewMetrics(prometheus.NewRegistry())
			e := NewEndpoint(h, s, Options{}, nil, m)
			now := time.Unix(1000, 0)
			e.clock = func() time.Time { return now }
			e.epoch = now
			e.HandleSession(peerA, peerA, c.identity, tinyRequest)
			now = now.Add(e.opts.PiggybackDeadline)
			e.tick()
			h.mu.Lock()
			ws := h.ws
			h.ws = nil
			h.mu.Unlock()
			for _, w := range ws {
				w.Respond(coapmsg.Content, c.payload)
			}
			out, _ := runTimers(e, s, &now, 200*time.Second) // the empty ACK included
			total, sends := 0, 0
			for _, o := range out {
				total += len(o.b)
				if dec(t, o.b).Type == coapmsg.Confirmable {
					sends++
				}
			}
			if sends != c.sends {
				t.Errorf("separate response sent %d times, want %d", sends, c.sends)
			}
			if got := testutil.ToFloat64(m.separateLimited); got != c.limited {
				t.Errorf("limited counter = %v, want %v", got, c.limited)
			}
			if c.withinBounds && total > MaxAmplification*len(tinyRequest) {
				t.Errorf("%d bytes sent for a %d-byte request", total, len(tinyRequest))
			}
		})
	}
}
