package coapclient

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is a UDP peer that answers each datagram with what reply returns (nil: nothing) and
// records what it received.
type server struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  []coapmsg.Message
}

func newServer(t *testing.T, reply func(n int, m *coapmsg.Message, peer *net.UDPAddr) []coapmsg.Message) *server {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &server{conn: c}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, peer, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			m := coapmsg.Message{}
			if m.Decode(buf[:n]) != nil {
				continue
			}
			m.Token = append([]byte(nil), m.Token...)
			m.Payload = append([]byte(nil), m.Payload...)
			s.mu.Lock()
			s.got = append(s.got, m)
			k := len(s.got)
			s.mu.Unlock()
			for _, r := range reply(k, &m, peer) {
				b, _ := r.Append(nil)
				c.WriteToUDP(b, peer)
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return s
}

func (s *server) received() []coapmsg.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]coapmsg.Message(nil), s.got...)
}

func dial(t *testing.T, s *server) net.Conn {
	t.Helper()
	c, err := net.Dial("udp", s.conn.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var fast = Params{AckTimeout: 50 * time.Millisecond, AckRandomFactor: 1, MaxRetransmit: 4}

func post(non bool) Request {
	return Request{NON: non, Code: coapmsg.POST, Path: []string{"sensor", "dev-1"}, ContentFormat: 50, Payload: []byte(`{"t":1}`)}
}

// TestRetransmission: a CON the server ignores twice is sent again with the same MID and token
// after doubling waits, and the third gets the piggybacked answer.
func TestRetransmission(t *testing.T) {
	s := newServer(t, func(n int, m *coapmsg.Message, _ *net.UDPAddr) []coapmsg.Message {
		if n < 3 {
			return nil
		}
		return []coapmsg.Message{{Type: coapmsg.Acknowledgement, Code: coapmsg.Changed, MID: m.MID, Token: m.Token}}
	})
	start := time.Now()
	resp, err := Do(t.Context(), dial(t, s), post(false), fast)
	if err != nil || resp.Code != coapmsg.Changed {
		t.Fatalf("Do: %v %v", resp, err)
	}
	got := s.received()
	if len(got) != 3 || got[0].MID != got[2].MID || string(got[0].Token) != string(got[2].Token) || got[0].Type != coapmsg.Confirmable {
		t.Fatalf("received %+v, want the same CON three times", got)
	}
	if el := time.Since(start); el < 150*time.Millisecond { // 50 + 100 ms of waits
		t.Errorf("answered after %v: the waits did not double", el)
	}
	if p, _ := got[0].Option(coapmsg.URIPath); string(p) != "sensor" || got[0].Count(coapmsg.URIPath) != 2 {
		t.Errorf("path options of %+v", got[0])
	}
}

// TestGiveUp: a CON never answered is sent 1 + MaxRetransmit times, then ErrTimeout.
func TestGiveUp(t *testing.T) {
	s := newServer(t, func(int, *coapmsg.Message, *net.UDPAddr) []coapmsg.Message { return nil })
	_, err := Do(t.Context(), dial(t, s), post(false), fast)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err %v, want ErrTimeout", err)
	}
	if n := len(s.received()); n != 5 {
		t.Errorf("%d transmissions, want 5", n)
	}
}

// TestNON: a NON is sent once; the NON answer is returned; without one, ErrTimeout after
// NONTimeout and still one transmission.
func TestNON(t *testing.T) {
	var silent atomic.Bool
	s := newServer(t, func(_ int, m *coapmsg.Message, _ *net.UDPAddr) []coapmsg.Message {
		if silent.Load() {
			return nil
		}
		return []coapmsg.Message{{Type: coapmsg.NonConfirmable, Code: coapmsg.Changed, MID: m.MID + 1, Token: m.Token}}
	})
	c := dial(t, s)
	resp, err := Do(t.Context(), c, post(true), fast)
	if err != nil || resp.Code != coapmsg.Changed || resp.Type != coapmsg.NonConfirmable {
		t.Fatalf("Do: %+v %v", resp, err)
	}
	silent.Store(true)
	if _, err := Do(t.Context(), c, post(true), Params{NONTimeout: 100 * time.Millisecond}); !errors.Is(err, ErrTimeout) {
		t.Fatalf("unanswered NON: %v", err)
	}
	got := s.received()
	if len(got) != 2 || got[0].Type != coapmsg.NonConfirmable {
		t.Fatalf("received %+v, want two NONs, one each", got)
	}
}

// TestSeparateResponse: an empty ACK stops the retransmissions; the separate CON response is
// returned and acknowledged.
func TestSeparateResponse(t *testing.T) {
	var sep sync.Once
	var conn atomic.Pointer[net.UDPConn] // the server's socket, for the late response
	s := newServer(t, func(_ int, m *coapmsg.Message, peer *net.UDPAddr) []coapmsg.Message {
		if m.Type != coapmsg.Confirmable || m.Code != coapmsg.POST {
			return nil
		}
		sep.Do(func() {
			resp := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.Changed, MID: 7, Token: m.Token}
			b, _ := resp.Append(nil)
			time.AfterFunc(300*time.Millisecond, func() { conn.Load().WriteToUDP(b, peer) }) // several ACK timeouts later
		})
		return []coapmsg.Message{{Type: coapmsg.Acknowledgement, Code: coapmsg.Empty, MID: m.MID}}
	})
	conn.Store(s.conn)
	resp, err := Do(t.Context(), dial(t, s), post(false), fast)
	if err != nil || resp.Code != coapmsg.Changed {
		t.Fatalf("Do: %v %v", resp, err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		got := s.received()
		if len(got) == 2 && got[1].Type == coapmsg.Acknowledgement && got[1].MID == 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %+v, want the request once and the ACK of the separate response", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestEcho: a 4.01 with Echo is answered once with the Echo value.
func TestEcho(t *testing.T) {
	s := newServer(t, func(_ int, m *coapmsg.Message, _ *net.UDPAddr) []coapmsg.Message {
		if v, ok := m.Option(coapmsg.Echo); ok && string(v) == "e1" {
			return []coapmsg.Message{{Type: coapmsg.Acknowledgement, Code: coapmsg.Content, MID: m.MID, Token: m.Token, Payload: []byte("ok")}}
		}
		return []coapmsg.Message{{Type: coapmsg.Acknowledgement, Code: coapmsg.Unauthorized, MID: m.MID, Token: m.Token,
			Options: []coapmsg.Option{{Number: coapmsg.Echo, Value: []byte("e1")}}}}
	})
	req := Request{Code: coapmsg.GET, Path: []string{"health"}, ContentFormat: -1}
	resp, err := Do(t.Context(), dial(t, s), req, fast)
	if err != nil || resp.Code != coapmsg.Content || string(resp.Payload) != "ok" {
		t.Fatalf("Do: %+v %v", resp, err)
	}
	if n := len(s.received()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

// TestContextEnds: Do returns when ctx ends, with ErrTimeout.
func TestContextEnds(t *testing.T) {
	s := newServer(t, func(int, *coapmsg.Message, *net.UDPAddr) []coapmsg.Message { return nil })
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := Do(ctx, dial(t, s), post(false), Params{}); !errors.Is(err, ErrTimeout) || time.Since(start) > time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
}
