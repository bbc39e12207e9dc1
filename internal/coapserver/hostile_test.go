package coapserver

import (
	"bytes"
	"testing"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestTooManyOptionsAnswered400: a datagram with more than coapmsg.MaxOptions options is answered
// by the endpoint (a CON request: piggybacked 4.00 with its token; a NON: nothing; a CON response:
// RST), counted as too_many_options, and never reaches deduplication or the handler. One with
// exactly MaxOptions options is a request like any other.
func TestTooManyOptionsAnswered400(t *testing.T) {
	h := &countingHandler{}
	s := &fakeSender{}
	m := NewMetrics(prometheus.NewRegistry())
	e := NewEndpoint(h, s, Options{}, nil, m)
	tooMany := m.disps[dispTooManyOptions]

	req := manyOptions(coapmsg.Confirmable, coapmsg.POST, 7, 14_000)
	for i := 0; i < 2; i++ { // a retransmission gets the same answer
		e.HandleDatagram(peerA, req)
		out := s.take()
		if len(out) != 1 {
			t.Fatalf("%d datagrams for a CON with 14,000 options, want one 4.00", len(out))
		}
		r := dec(t, out[0].b)
		if r.Type != coapmsg.Acknowledgement || r.Code != coapmsg.BadRequest || r.MID != 7 || string(r.Token) != "tk" || string(r.Payload) != "too many options" {
			t.Fatalf("answer %v %v MID %d token %q %q, want ACK 4.00 MID 7 token tk", r.Type, r.Code, r.MID, r.Token, r.Payload)
		}
		if len(out[0].b) > MaxAmplification*len(req) {
			t.Fatalf("answer of %d bytes to %d", len(out[0].b), len(req))
		}
	}
	e.HandleDatagram(peerA, manyOptions(coapmsg.NonConfirmable, coapmsg.POST, 8, 14_000))
	if out := s.take(); len(out) != 0 {
		t.Fatalf("NON with 14,000 options answered %x", out[0].b)
	}
	e.HandleDatagram(peerA, manyOptions(coapmsg.Confirmable, coapmsg.Content, 9, coapmsg.MaxOptions+1))
	if out := s.take(); len(out) != 1 || !bytes.Equal(out[0].b, []byte{0x70, 0, 0, 9}) {
		t.Fatalf("CON 2.05 with too many options: %v, want RST", out)
	}
	if h.calls != 0 {
		t.Fatalf("handler called %d times", h.calls)
	}
	if n := e.DedupEntries(); n != 0 {
		t.Fatalf("%d dedup entries", n)
	}
	if got := testutil.ToFloat64(tooMany); got != 4 {
		t.Fatalf("too_many_options = %v, want 4", got)
	}
	if got := testutil.ToFloat64(m.codes[coapmsg.BadRequest]); got != 2 {
		t.Fatalf("4.00 responses counted %v, want 2", got)
	}

	e.HandleDatagram(peerA, manyOptions(coapmsg.Confirmable, coapmsg.POST, 10, coapmsg.MaxOptions))
	if out := s.take(); len(out) != 1 || dec(t, out[0].b).Code != coapmsg.Changed || h.calls != 1 {
		t.Fatalf("a request with %d options did not reach the handler (%d calls, %v)", coapmsg.MaxOptions, h.calls, out)
	}
}
