package ingest

import (
	"testing"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// FuzzServe feeds arbitrary datagrams through the exchange layer and the device API: no panic, at
// most one answer, every answer a valid CoAP message echoing the request's MID (CON) or token, and
// a record stored exactly when the answer is 2.04.
func FuzzServe(f *testing.F) {
	seed := func(m coapmsg.Message) {
		b, _ := m.Append(nil)
		f.Add(b)
	}
	seed(coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: 1, Token: []byte{1}, Options: append(pathOpts("a", "b"), cf(50)), Payload: []byte(`{"t":1}`)})
	seed(coapmsg.Message{Type: coapmsg.NonConfirmable, Code: coapmsg.PUT, MID: 2, Options: pathOpts("a", "b"), Payload: []byte(`{"t":[1,{"x":null}]}`)})
	seed(coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.GET, MID: 3, Options: append(pathOpts(".well-known", "core"), opt(coapmsg.URIQuery, "rt=*"))})
	seed(coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.GET, MID: 4, Options: pathOpts("health")})
	seed(coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: 5, Options: append(pathOpts("a", "b"), opt(9, "x")), Payload: []byte(`{}`)})
	for _, b := range [][]byte{{}, {0x40}, {0x40, 0, 0, 1}, {0x49, 1, 0, 1}, {0x40, 2, 0, 1, 0xff}, {0x40, 2, 0, 1, 0xf0}, {0x60, 0, 0, 1}, {0x70, 0, 0, 1}} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newRig(t)
		r.ep.HandleDatagram(peer, data)
		out := r.cap.out
		if len(out) > 1 {
			t.Fatalf("%d answers to one datagram", len(out))
		}
		stored := len(r.sp.data)
		if len(out) == 0 {
			if stored != 0 {
				t.Fatal("stored a record without answering")
			}
			return
		}
		var req, resp coapmsg.Message
		if err := resp.Decode(out[0]); err != nil {
			t.Fatalf("answer %x does not decode: %v", out[0], err)
		}
		reqErr := req.Decode(data)
		if reqErr == nil && (req.Type == coapmsg.Acknowledgement || req.Type == coapmsg.Reset) {
			t.Fatalf("answered an %v", req.Type)
		}
		if resp.Type == coapmsg.Acknowledgement || resp.Type == coapmsg.Reset {
			if mid := uint16(data[2])<<8 | uint16(data[3]); resp.MID != mid {
				t.Fatalf("answer MID %d, request MID %d", resp.MID, mid)
			}
		}
		if reqErr == nil && resp.Type != coapmsg.Reset && string(resp.Token) != string(req.Token) {
			t.Fatalf("token %x not echoed (%x)", req.Token, resp.Token)
		}
		if (resp.Code == coapmsg.Changed) != (stored == 1) || stored > 1 {
			t.Fatalf("answer %v with %d records stored", resp.Code, stored)
		}
		// No Echo value can be valid here (a fresh key): the answer must not amplify.
		if len(out[0]) > maxAmplification*len(data) {
			t.Fatalf("answer of %d bytes to a request of %d", len(out[0]), len(data))
		}
	})
}
