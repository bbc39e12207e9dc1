package dtlsserver

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
)

// A session's datagrams reach the handler in the order its Conn decrypted them, with several
// sessions sending at once (each goes to its own dispatcher, always the same one).
func TestDispatchKeepsSessionOrder(t *testing.T) {
	const clients, burst = 4, 12 // a burst fits the session queue (16)
	ts := startServer(t, Config{})
	var wg sync.WaitGroup
	for i := range clients {
		id := "sensor/dev-" + strconv.Itoa(1+i%2)
		c, _, err := dial(t, ts.LocalAddr(), id, keys[id])
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range burst {
				m := coapmsg.Message{Type: coapmsg.NonConfirmable, Code: coapmsg.POST, MID: uint16(mid.Add(1)), Token: []byte{byte(i)}, Payload: fmt.Appendf(nil, "%d/%d", i, r)}
				b, _ := m.Append(nil)
				if _, err := c.Write(b); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, "every request", func() bool { return len(ts.h.all()) == clients*burst })
	next := make([]int, clients)
	for _, r := range ts.h.all() {
		var i, n int
		if _, err := fmt.Sscanf(r.payload, "%d/%d", &i, &n); err != nil {
			t.Fatal(err)
		}
		if n != next[i] {
			t.Fatalf("client %d: request %d reached the handler where %d was due", i, n, next[i])
		}
		next[i]++
	}
}

// blockingHandler answers 2.04 once release is closed, counting the requests it got.
type blockingHandler struct {
	release chan struct{}
	mu      sync.Mutex
	got     int
}

func (h *blockingHandler) ServeCoAP(w *coapserver.ResponseWriter, _ *coapserver.Request) {
	<-h.release
	h.mu.Lock()
	h.got++
	h.mu.Unlock()
	w.Respond(coapmsg.Changed, nil)
}

// A session whose datagrams wait for a busy handler has at most dispatchPerSession of them
// queued: the next one blocks its goroutine (so pion's queue and then the session's fill, and the
// reader drops, as before the dispatchers), and goes on once the handler does.
func TestDispatchBoundsSessionQueue(t *testing.T) {
	h := &blockingHandler{release: make(chan struct{})}
	s, err := New(Config{Addr: "127.0.0.1:0", PSK: lookup}, h, coapserver.Options{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.startDispatch()
	defer s.stopDispatch()
	ss := &session{num: 1, key: sessionKey(1), identity: "sensor/dev-1"}
	slots := make(chan struct{}, dispatchPerSession)
	queued := make(chan int, dispatchPerSession+2)
	go func() {
		for i := range dispatchPerSession + 2 {
			m := coapmsg.Message{Type: coapmsg.NonConfirmable, Code: coapmsg.POST, MID: uint16(i), Payload: []byte("x")}
			b, _ := m.Append(nil)
			s.enqueue(ss, ss.key, b, slots)
			queued <- i
		}
	}()
	// The first is in the handler, dispatchPerSession-1 wait behind it: one more fits.
	for i := range dispatchPerSession {
		select {
		case <-queued:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d datagrams queued, want %d", i, dispatchPerSession)
		}
	}
	select {
	case i := <-queued:
		t.Fatalf("datagram %d queued past the session's %d", i, dispatchPerSession)
	case <-time.After(50 * time.Millisecond):
	}
	close(h.release)
	for range 2 {
		select {
		case <-queued:
		case <-time.After(5 * time.Second):
			t.Fatal("the session's goroutine stayed blocked after the handler went on")
		}
	}
	waitFor(t, "every request handled", func() bool { h.mu.Lock(); defer h.mu.Unlock(); return h.got == dispatchPerSession+2 })
	if s.disp.pending.Load() != 0 {
		t.Fatalf("%d datagrams still counted pending", s.disp.pending.Load())
	}
}
