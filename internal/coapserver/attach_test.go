package coapserver

import (
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// attachHandler attaches att to every exchange and answers code (deferred when late is set).
type attachHandler struct {
	att      []byte
	code     coapmsg.Code
	verified bool
	deferH   deferHandler
	late     bool
}

func (h *attachHandler) ServeCoAP(w *ResponseWriter, r *Request) {
	w.Attach(h.att, 50)
	if h.verified {
		w.PeerVerified()
	}
	if h.late {
		h.deferH.ServeCoAP(w, r)
		return
	}
	w.Respond(h.code, nil)
}

// TestAttach: a 2.xx answer given no payload carries the attachment with its Content-Format;
// an error answer does not; to an unverified peer it is left out when the answer would pass
// MaxAmplification times the request (piggybacked), or go out fewer times than a bare one
// (separate); past a block it is left out whoever the peer is.
func TestAttach(t *testing.T) {
	small, big := []byte(`{"d":1}`), []byte(`{"d":"`+strings.Repeat("x", 200)+`"}`)
	for _, tc := range []struct {
		name     string
		h        *attachHandler
		opts     Options
		carries  bool
		separate bool
	}{
		{"2.04 small", &attachHandler{att: small, code: coapmsg.Changed}, Options{}, true, false},
		{"5.03", &attachHandler{att: small, code: coapmsg.ServiceUnavailable}, Options{}, false, false},
		{"unverified, over 3x", &attachHandler{att: big, code: coapmsg.Changed}, Options{}, false, false},
		{"verified, over 3x", &attachHandler{att: big, code: coapmsg.Changed, verified: true}, Options{}, true, false},
		{"verified, over a block", &attachHandler{att: big, code: coapmsg.Changed, verified: true}, Options{BlockWise: true, BlockSize: 64}, false, false},
		{"separate, small", &attachHandler{att: small, code: coapmsg.Changed, late: true}, Options{}, true, true},
		{"separate, fewer sends", &attachHandler{att: []byte(strings.Repeat("y", 50)), code: coapmsg.Changed, late: true}, Options{}, false, true},
		{"separate, verified", &attachHandler{att: big, code: coapmsg.Changed, late: true, verified: true}, Options{}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.AckTimeout = time.Hour
			if tc.separate {
				opts.PiggybackDeadline = 10 * time.Millisecond
			}
			e, s := newTestEndpoint(tc.h, opts)
			if tc.separate {
				e.Start()
				defer e.Stop()
			}
			// A 13-byte request (a budget of 39 bytes) for a piggybacked answer; a 71-byte one for a
			// separate answer (209 bytes: a bare one, 6 bytes, goes out 5 times, the most there is;
			// 18 bytes with the small attachment still 5 times, 59 with 50 bytes 3 times).
			req := post(coapmsg.Confirmable, 7, "tk")
			if tc.separate {
				req.Payload = []byte(strings.Repeat("p", 60))
			}
			e.HandleDatagram(peerA, enc(t, req))
			var resp *coapmsg.Message
			if tc.separate {
				for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
					if out := s.take(); len(out) == 1 && dec(t, out[0].b).Code == coapmsg.Empty {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("no empty ACK")
					}
				}
				tc.h.deferH.release(tc.h.code)
			}
			out := s.take()
			if len(out) != 1 {
				t.Fatalf("%d datagrams", len(out))
			}
			resp = dec(t, out[0].b)
			_, hasCF := resp.Option(coapmsg.ContentFormat)
			if got := len(resp.Payload) > 0; got != tc.carries || hasCF != tc.carries {
				t.Fatalf("%v payload %q (Content-Format %v), want the attachment: %v", resp.Code, resp.Payload, hasCF, tc.carries)
			}
			if tc.carries && string(resp.Payload) != string(tc.h.att) {
				t.Fatalf("payload %q", resp.Payload)
			}
		})
	}
}
