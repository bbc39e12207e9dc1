package coapserver

import (
	"context"
	"fmt"
	"sync"
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
