package coapserver

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
	"github.com/prometheus/client_golang/prometheus"
)

func startUDP(t *testing.T, h Handler, cfg Config) *Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	s, err := New(cfg, h, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Serve(context.Background()); close(done) }()
	t.Cleanup(func() { s.Close(); <-done })
	return s
}

// echoHandler answers 2.05 with the request's payload, after delay (deferred) if delay > 0.
type echoHandler struct{ delay time.Duration }

func (h echoHandler) ServeCoAP(w *ResponseWriter, r *Request) {
	payload := append([]byte(nil), r.Msg.Payload...)
	if h.delay == 0 {
		w.Respond(coapmsg.Content, payload)
		return
	}
	w.Defer()
	time.AfterFunc(h.delay, func() { w.Respond(coapmsg.Content, payload) })
}

func TestUDPSeparateResponse(t *testing.T) {
	s := startUDP(t, echoHandler{delay: 300 * time.Millisecond}, Config{Exchange: Options{PiggybackDeadline: 50 * time.Millisecond}})
	c, err := coaptest.Dial(s.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := c.Request(coapmsg.Confirmable, coapmsg.POST, "/a/b", []byte("slow"))
	b, _ := req.Append(nil)
	if err := c.Send(b); err != nil {
		t.Fatal(err)
	}
	first, err := c.Read(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if first.Type != coapmsg.Acknowledgement || first.Code != coapmsg.Empty || first.MID != req.MID {
		t.Fatalf("first answer %v %v MID %d, want empty ACK for %d", first.Type, first.Code, first.MID, req.MID)
	}
	sep, err := c.Read(2 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if sep.Type != coapmsg.Confirmable || sep.Code != coapmsg.Content || string(sep.Token) != string(req.Token) || string(sep.Payload) != "slow" {
		t.Fatalf("separate response %v %v %x %q", sep.Type, sep.Code, sep.Token, sep.Payload)
	}
	// Not acknowledging it: it comes again (ACK_TIMEOUT 2–3 s).
	again, err := c.Read(4 * time.Second)
	if err != nil || again.MID != sep.MID || again.Type != coapmsg.Confirmable {
		t.Fatalf("no retransmission of the separate response: %v %+v", err, again)
	}
	c.Send([]byte{0x60, 0, byte(sep.MID >> 8), byte(sep.MID)})
	if m, err := c.Read(3500 * time.Millisecond); err == nil {
		t.Fatalf("still retransmitting after ACK: %+v", m)
	}
}

// TestUDPPeersDoNotMix: many peers using the same MIDs and tokens at once each get their own answers.
func TestUDPPeersDoNotMix(t *testing.T) {
	s := startUDP(t, echoHandler{}, Config{})
	var wg sync.WaitGroup
	for p := 0; p < 20; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := coaptest.Dial(s.LocalAddr())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			for i := 0; i < 50; i++ {
				want := fmt.Sprintf("peer %d msg %d", p, i)
				m := &coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: uint16(i), Token: []byte{7, 7}, Payload: []byte(want)}
				resp, err := c.Do(m)
				if err != nil {
					t.Error(err)
					return
				}
				if string(resp.Payload) != want || resp.MID != uint16(i) {
					t.Errorf("peer %d got %q MID %d, want %q", p, resp.Payload, resp.MID, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestUDPReusePortSockets(t *testing.T) {
	s := startUDP(t, echoHandler{}, Config{Sockets: 3})
	for i := 0; i < 10; i++ {
		c, err := coaptest.Dial(s.LocalAddr())
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(c.Request(coapmsg.Confirmable, coapmsg.GET, "/x", []byte("hi")))
		c.Close()
		if err != nil || string(resp.Payload) != "hi" {
			t.Fatalf("client %d: %v %+v", i, err, resp)
		}
	}
}

// countHandler answers 2.04 and counts the requests it saw.
type countHandler struct{ n *atomic.Int64 }

func (h countHandler) ServeCoAP(w *ResponseWriter, r *Request) {
	h.n.Add(1)
	w.Respond(coapmsg.Changed, nil)
}

// TestUDPOversizedDatagram: a datagram longer than MaxDatagram is not cut short and handled as if
// whole (its payload would be stored truncated): a CON request gets 4.13 with Size1 and its token,
// a NON or a non-request nothing, and the handler never sees any of them. One of exactly
// MaxDatagram bytes is handled normally.
func TestUDPOversizedDatagram(t *testing.T) {
	const maxDatagram = 1024
	var n atomic.Int64
	s := startUDP(t, countHandler{&n}, Config{MaxDatagram: maxDatagram, Exchange: Options{MaxRequestBody: 900}})
	c, err := coaptest.Dial(s.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// sized returns a request whose datagram is size bytes long.
	sized := func(typ coapmsg.Type, code coapmsg.Code, size int) (*coapmsg.Message, []byte) {
		m := c.Request(typ, code, "/a/b", nil)
		b, _ := m.Append(nil)
		m.Payload = make([]byte, size-len(b)-1) // -1: the payload marker
		for i := range m.Payload {
			m.Payload[i] = 'x'
		}
		b, _ = m.Append(nil)
		if len(b) != size {
			t.Fatalf("built %d bytes, want %d", len(b), size)
		}
		return m, b
	}
	for _, size := range []int{maxDatagram + 1, 4000, 60000} {
		req, b := sized(coapmsg.Confirmable, coapmsg.POST, size)
		if err := c.Send(b); err != nil {
			t.Fatal(err)
		}
		resp, err := c.Read(2 * time.Second)
		if err != nil {
			t.Fatalf("%d-byte CON: %v", size, err)
		}
		if resp.Type != coapmsg.Acknowledgement || resp.MID != req.MID || resp.Code != coapmsg.RequestEntityTooLarge ||
			string(resp.Token) != string(req.Token) {
			t.Fatalf("%d-byte CON: %v %v MID %d token %x, want a 4.13 ACK for MID %d token %x", size, resp.Type, resp.Code, resp.MID, resp.Token, req.MID, req.Token)
		}
		v, _ := resp.Option(coapmsg.Size1)
		if size1, ok := coapmsg.Uint(v); !ok || size1 != 900 {
			t.Fatalf("%d-byte CON: Size1 %v (%x), want 900", size, size1, v)
		}
	}
	for _, typ := range []coapmsg.Type{coapmsg.NonConfirmable, coapmsg.Acknowledgement} {
		code := coapmsg.POST
		if typ == coapmsg.Acknowledgement {
			code = coapmsg.Content
		}
		_, b := sized(typ, code, 2000)
		if err := c.Send(b); err != nil {
			t.Fatal(err)
		}
		if m, err := c.Read(300 * time.Millisecond); err == nil {
			t.Fatalf("an oversized %v got an answer: %+v", typ, m)
		}
	}
	if got := n.Load(); got != 0 {
		t.Fatalf("the handler saw %d oversized requests", got)
	}
	// Exactly MaxDatagram bytes: taken.
	req, b := sized(coapmsg.Confirmable, coapmsg.POST, maxDatagram)
	if err := c.Send(b); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Read(2 * time.Second)
	if err != nil || resp.Code != coapmsg.Changed || resp.MID != req.MID || n.Load() != 1 {
		t.Fatalf("a %d-byte datagram: %v %+v (handler calls %d), want 2.04", maxDatagram, err, resp, n.Load())
	}
}
