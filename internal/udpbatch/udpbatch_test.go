package udpbatch

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// TestQueueAndReader: datagrams queued from several goroutines all arrive, intact and from the
// queue's socket, at a Reader; over IPv4 and over an IPv6 (dual-stack) socket to IPv4 peers.
func TestQueueAndReader(t *testing.T) {
	for _, network := range []string{"udp4", "udp"} {
		t.Run(network, func(t *testing.T) {
			src, err := net.ListenUDP(network, &net.UDPAddr{})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			dst, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			q := NewQueue(8)
			done := make(chan struct{})
			go func() { defer close(done); q.Run(src, func(err error) { t.Error(err) }) }()
			const senders, each = 4, 50
			to := dst.LocalAddr().(*net.UDPAddr).AddrPort()
			for s := range senders {
				go func() {
					for i := range each {
						q.Send(to, fmt.Appendf(nil, "%d/%d", s, i))
					}
				}()
			}
			r := NewReader(dst, 16, 64)
			got := map[string]bool{}
			_ = dst.SetReadDeadline(time.Now().Add(5 * time.Second))
			for len(got) < senders*each {
				n, err := r.Read()
				if err != nil {
					t.Fatalf("after %d datagrams: %v", len(got), err)
				}
				for i := range n {
					from, b := r.Datagram(i)
					if from.Port() != src.LocalAddr().(*net.UDPAddr).AddrPort().Port() || !from.Addr().Is4() {
						t.Fatalf("datagram from %v", from)
					}
					if got[string(b)] {
						t.Fatalf("%q twice", b)
					}
					got[string(b)] = true
				}
			}
			q.Close()
			<-done
			q.Send(to, []byte("late")) // dropped: nothing writes any more
			_ = dst.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if n, err := r.Read(); err == nil {
				t.Fatalf("%d datagrams after Close", n)
			}
		})
	}
}

// TestQueueHold: while the queue is held nothing is written; the last Release (holds nest)
// writes everything queued meanwhile, and Sends after it go out at once again.
func TestQueueHold(t *testing.T) {
	src, dst := loopbackPair(t)
	q := NewQueue(4)
	done := make(chan struct{})
	go func() { defer close(done); q.Run(src, func(err error) { t.Error(err) }) }()
	defer func() { q.Close(); <-done }()
	to := dst.LocalAddr().(*net.UDPAddr).AddrPort()
	r := NewReader(dst, 16, 64)
	read := func(wait time.Duration) []string {
		var got []string
		_ = dst.SetReadDeadline(time.Now().Add(wait))
		for {
			n, err := r.Read()
			for i := range n {
				_, b := r.Datagram(i)
				got = append(got, string(b))
			}
			if err != nil {
				return got
			}
		}
	}
	q.Hold()
	q.Hold()
	for i := range 6 {
		q.Send(to, fmt.Appendf(nil, "held %d", i))
	}
	if got := read(100 * time.Millisecond); len(got) > 0 {
		t.Fatalf("written while held: %q", got)
	}
	q.Release()
	if got := read(100 * time.Millisecond); len(got) > 0 {
		t.Fatalf("written while still held once: %q", got)
	}
	q.Release()
	if got := read(300 * time.Millisecond); fmt.Sprint(got) != "[held 0 held 1 held 2 held 3 held 4 held 5]" {
		t.Fatalf("after the last Release: %q", got)
	}
	q.Send(to, []byte("free"))
	if got := read(300 * time.Millisecond); fmt.Sprint(got) != "[free]" {
		t.Fatalf("after the hold: %q", got)
	}
}

// TestQueueCloseAroundRun: Close before Run starts, or while it is starting in another goroutine
// (a server stopped as it starts): Run still writes every datagram queued before Close, in
// order (a repeat would show in the next round's), and returns.
func TestQueueCloseAroundRun(t *testing.T) {
	src, dst := loopbackPair(t)
	to := dst.LocalAddr().(*net.UDPAddr).AddrPort()
	r := NewReader(dst, 16, 64)
	for round := range 50 {
		q := NewQueue(2)
		for i := range 5 {
			q.Send(to, fmt.Appendf(nil, "%d/%d", round, i))
		}
		done := make(chan struct{})
		if round%2 == 0 {
			q.Close()
			go func() { defer close(done); q.Run(src, func(err error) { t.Error(err) }) }()
		} else {
			go func() { defer close(done); q.Run(src, func(err error) { t.Error(err) }) }()
			q.Close()
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: Run did not return after Close", round)
		}
		var got []string
		_ = dst.SetReadDeadline(time.Now().Add(2 * time.Second))
		for len(got) < 5 {
			n, err := r.Read()
			for i := range n {
				_, b := r.Datagram(i)
				got = append(got, string(b))
			}
			if err != nil {
				t.Fatalf("round %d: after %q: %v", round, got, err)
			}
		}
		if want := fmt.Sprintf("[%[1]d/0 %[1]d/1 %[1]d/2 %[1]d/3 %[1]d/4]", round); fmt.Sprint(got) != want {
			t.Fatalf("round %d: got %q, want %s", round, got, want)
		}
	}
}

// loopbackPair is two IPv4 loopback sockets, closed when the test ends.
func loopbackPair(t *testing.T) (src, dst *net.UDPConn) {
	t.Helper()
	for _, c := range []**net.UDPConn{&src, &dst} {
		var err error
		if *c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { (*c).Close() })
	}
	return src, dst
}
