package coapserver

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// observeHandler registers a GET with Observe 0 as an observer of its Uri-Path, answers with
// the resource's state, and deregisters a GET without Observe.
type observeHandler struct{ state string }

func (h *observeHandler) ServeCoAP(w *ResponseWriter, r *Request) {
	key := string(r.Path(0))
	if v, ok := r.Observe(); ok && v == 0 {
		w.Observe(key, 50, []byte(h.state))
	} else {
		w.Unobserve()
	}
	w.SetUintOption(coapmsg.ContentFormat, 50)
	w.Respond(coapmsg.Content, []byte(h.state))
}

func observeGet(mid uint16, token, path string, observe ...uint32) coapmsg.Message {
	opts := []coapmsg.Option{}
	for _, v := range observe {
		opts = append(opts, coapmsg.Option{Number: coapmsg.Observe, Value: coapmsg.AppendUint(nil, v)})
	}
	opts = append(opts, coapmsg.Option{Number: coapmsg.URIPath, Value: []byte(path)})
	return coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.GET, MID: mid, Token: []byte(token), Options: opts}
}

func observeSeq(t *testing.T, m *coapmsg.Message) uint32 {
	t.Helper()
	v, ok := m.Option(coapmsg.Observe)
	if !ok {
		t.Fatalf("%v without Observe", m.Code)
	}
	n, _ := coapmsg.Uint(v)
	return n
}

// TestObserveNotifications: a registration gets Observe and Max-Age; each Notify reaches the
// observer with an increasing sequence number, NON but every ObserveCONEvery-th as a CON; a GET
// without Observe deregisters; an RST to a notification removes the observer.
func TestObserveNotifications(t *testing.T) {
	h := &observeHandler{state: `{"a":1}`}
	e, s := newTestEndpoint(h, Options{ObserveCONEvery: 3})
	e.HandleDatagram(peerA, enc(t, observeGet(1, "ob", "dev-1", 0)))
	out := s.take()
	if len(out) != 1 {
		t.Fatalf("%d answers", len(out))
	}
	reg := dec(t, out[0].b)
	last := observeSeq(t, reg)
	if ma, _ := reg.Option(coapmsg.MaxAge); len(ma) == 0 || e.Observers() != 1 {
		t.Fatalf("registration: Max-Age %x, %d observers", ma, e.Observers())
	}
	var types []coapmsg.Type
	for i := range 6 {
		e.Notify("dev-2", 50, []byte("other")) // nobody observes it
		e.Notify("dev-1", 50, fmt.Appendf(nil, `{"a":%d}`, i+2))
		out := s.take()
		if len(out) != 1 || out[0].peer != peerA {
			t.Fatalf("notification %d: %d datagrams", i, len(out))
		}
		n := dec(t, out[0].b)
		if string(n.Token) != "ob" || n.Code != coapmsg.Content || string(n.Payload) != fmt.Sprintf(`{"a":%d}`, i+2) {
			t.Fatalf("notification %d: %v %q %q", i, n.Code, n.Token, n.Payload)
		}
		if seq := observeSeq(t, n); seq <= last {
			t.Fatalf("sequence %d after %d", seq, last)
		} else {
			last = seq
		}
		types = append(types, n.Type)
		if n.Type == coapmsg.Confirmable { // the client acknowledges
			e.HandleDatagram(peerA, []byte{0x60, 0, byte(n.MID >> 8), byte(n.MID)})
		}
	}
	want := []coapmsg.Type{coapmsg.NonConfirmable, coapmsg.NonConfirmable, coapmsg.Confirmable,
		coapmsg.NonConfirmable, coapmsg.NonConfirmable, coapmsg.Confirmable}
	if fmt.Sprint(types) != fmt.Sprint(want) {
		t.Fatalf("notification types %v, want %v", types, want)
	}

	// A GET without Observe from the same token deregisters.
	e.HandleDatagram(peerA, enc(t, observeGet(2, "ob", "dev-1")))
	s.take()
	if e.Observers() != 0 {
		t.Fatalf("%d observers after deregistration", e.Observers())
	}

	// An observer that answers a notification with RST is removed.
	e.HandleDatagram(peerB, enc(t, observeGet(3, "o2", "dev-1", 0)))
	s.take()
	e.Notify("dev-1", 50, []byte(`{"a":9}`))
	n := dec(t, s.take()[0].b)
	e.HandleDatagram(peerB, []byte{0x70, 0, byte(n.MID >> 8), byte(n.MID)})
	if e.Observers() != 0 {
		t.Fatalf("%d observers after an RST", e.Observers())
	}
	e.Notify("dev-1", 50, []byte(`{"a":10}`))
	if out := s.take(); len(out) != 0 {
		t.Fatalf("notified a removed observer: %d datagrams", len(out))
	}
}

// TestObserveTimeoutAndCap: an observer that never acknowledges a CON notification is removed
// after MaxRetransmit retransmissions; registrations beyond MaxObservers are plain answers.
func TestObserveTimeoutAndCap(t *testing.T) {
	h := &observeHandler{state: `{}`}
	e, s := newTestEndpoint(h, Options{ObserveCONEvery: 1, AckTimeout: 10 * time.Millisecond, MaxRetransmit: 2, MaxObservers: 1})
	e.Start()
	defer e.Stop()
	e.HandleDatagram(peerA, enc(t, observeGet(1, "ob", "x", 0)))
	e.HandleDatagram(peerB, enc(t, observeGet(1, "ob", "x", 0)))
	out := s.take()
	if len(out) != 2 || e.Observers() != 1 {
		t.Fatalf("%d answers, %d observers", len(out), e.Observers())
	}
	if _, ok := dec(t, out[1].b).Option(coapmsg.Observe); ok {
		t.Fatal("a registration beyond MaxObservers got Observe")
	}
	e.Notify("x", 50, []byte(`{"b":1}`))
	deadline := time.Now().Add(5 * time.Second)
	for e.Observers() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("observer not removed after an unacknowledged CON notification")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if sent := len(s.take()); sent != 3 {
		t.Fatalf("%d transmissions of the CON notification, want 1 + MaxRetransmit", sent)
	}
}

// BenchmarkObserverMemory: the heap an observer takes, each observing its own resource (a
// thing) from its own address, as 10,000 devices would: the heap after 10,000 registrations less
// the heap after 10,000 plain GETs (whose exchanges the endpoint remembers as well).
func BenchmarkObserverMemory(b *testing.B) {
	const n = 10_000
	heap := func(observe bool) uint64 {
		e, _ := newTestEndpoint(&observeHandler{state: `{"state":{}}`}, Options{MaxObservers: n})
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i := range n {
			req := observeGet(1, "tok12345", fmt.Sprintf("dev-%05d", i))
			if observe {
				req = observeGet(1, "tok12345", fmt.Sprintf("dev-%05d", i), 0)
			}
			e.HandleDatagram(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 5683), enc(b, req))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if observe && e.Observers() != n {
			b.Fatalf("%d observers", e.Observers())
		}
		runtime.KeepAlive(e)
		return after.HeapAlloc - before.HeapAlloc
	}
	for range b.N {
		with, without := heap(true), heap(false)
		b.ReportMetric(float64(int64(with)-int64(without))/n, "bytes/observer")
	}
}

// TestObserversPerResource: a resource keeps at most ObserversPerResource observers; a new
// registration replaces the oldest, which gets no more notifications.
func TestObserversPerResource(t *testing.T) {
	e, s := newTestEndpoint(&observeHandler{state: `{}`}, Options{})
	for i := range ObserversPerResource + 1 {
		p := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 5683)
		e.HandleDatagram(p, enc(t, observeGet(1, "ob", "dev-1", 0)))
		time.Sleep(time.Millisecond) // registrations at distinct times
	}
	s.take()
	if n := e.Observers(); n != ObserversPerResource {
		t.Fatalf("%d observers, want %d", n, ObserversPerResource)
	}
	e.Notify("dev-1", 50, []byte(`{"x":1}`))
	out := s.take()
	if len(out) != ObserversPerResource {
		t.Fatalf("%d notifications", len(out))
	}
	for _, o := range out {
		if o.peer.Addr() == netip.AddrFrom4([4]byte{10, 0, 0, 1}) {
			t.Fatal("the oldest observer, replaced, was notified")
		}
	}
}
