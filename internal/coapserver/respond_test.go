package coapserver

import (
	"bytes"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// TestResponseOptions: options set in any order go out sorted with their values, in a
// piggybacked response and in a separate one alike, and Size measures exactly what Respond
// sends; past 4 options or 16 bytes of values an option is dropped, not the response.
func TestResponseOptions(t *testing.T) {
	set := func(w *ResponseWriter) {
		w.SetUintOption(coapmsg.Size1, 8192)
		w.SetOption(coapmsg.ETag, []byte("etag-1"))
		w.SetUintOption(coapmsg.ContentFormat, 50)
		w.SetUintOption(coapmsg.MaxAge, 7)
		w.SetUintOption(coapmsg.Size2, 1)             // a fifth: dropped
		w.SetOption(coapmsg.Echo, []byte("too long")) // a fifth, and past 16 bytes: dropped
	}
	want := []coapmsg.Option{o(coapmsg.ETag, "etag-1"), o(coapmsg.ContentFormat, "\x32"), o(coapmsg.MaxAge, "\x07"), o(coapmsg.Size1, "\x20\x00")}
	check := func(t *testing.T, b []byte, code coapmsg.Code) {
		t.Helper()
		m := dec(t, b)
		if m.Code != code || len(m.Options) != len(want) {
			t.Fatalf("%v with options %v, want %v with %v", m.Code, m.Options, code, want)
		}
		for i := range want {
			if m.Options[i].Number != want[i].Number || !bytes.Equal(m.Options[i].Value, want[i].Value) {
				t.Fatalf("option %d: %d %x, want %d %x", i, m.Options[i].Number, m.Options[i].Value, want[i].Number, want[i].Value)
			}
		}
	}

	var size int
	e, s := newTestEndpoint(HandlerFunc(func(w *ResponseWriter, r *Request) {
		set(w)
		size = w.Size(2)
		w.Respond(coapmsg.Content, []byte("ok"))
	}), Options{})
	e.HandleDatagram(peerA, enc(t, post(coapmsg.Confirmable, 1, "tok")))
	out := s.take()
	if len(out) != 1 {
		t.Fatalf("%d answers", len(out))
	}
	check(t, out[0].b, coapmsg.Content)
	if size != len(out[0].b) {
		t.Fatalf("Size said %d, Respond sent %d bytes", size, len(out[0].b))
	}

	// The same options on a separate response, after the empty ACK.
	h := &deferHandler{}
	e, s = newTestEndpoint(h, Options{})
	now := time.Unix(1000, 0)
	e.clock = func() time.Time { return now }
	e.epoch = now
	e.HandleDatagram(peerA, enc(t, post(coapmsg.Confirmable, 2, "tok")))
	now = now.Add(e.opts.PiggybackDeadline)
	e.tick()
	if out := s.take(); len(out) != 1 || dec(t, out[0].b).Code != coapmsg.Empty {
		t.Fatalf("want an empty ACK, got %v", out)
	}
	h.mu.Lock()
	w := h.ws[0]
	h.mu.Unlock()
	set(w)
	h.release(coapmsg.Changed)
	out = s.take()
	if len(out) != 1 || dec(t, out[0].b).Type != coapmsg.Confirmable {
		t.Fatalf("want one separate CON response, got %v", out)
	}
	check(t, out[0].b, coapmsg.Changed)
}
