package coapserver

import (
	"net/netip"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// FuzzBlock1 drives the reassembly with any sequence of blocks (4 bytes each: peer and path,
// NUM, M and SZX, payload length and time step) from 4 peers to 4 paths, under tight bounds,
// and checks what must hold whatever the order: no panic, never more bytes held than
// BlockMaxBytes, the gauges equal to what is held at the end, every body the handler gets no longer than
// MaxRequestBody and made of its blocks in place (byte i of a body on path p is f(i, p)), and
// nothing left once the timeout has passed.
func FuzzBlock1(f *testing.F) {
	// A clean transfer, a gap, a restart, a restated block, a body too large, a late negotiation.
	f.Add([]byte{0x00, 0x0e, 0xff, 0, 0x00, 0x1e, 0xff, 0, 0x00, 0x26, 0x40, 0})
	f.Add([]byte{0x01, 0x0e, 0xff, 0, 0x01, 0x2e, 0xff, 0, 0x01, 0x0e, 0xff, 1, 0x01, 0x1e, 0xff, 0, 0x01, 0x1e, 0xff, 0, 0x01, 0x26, 0x10, 0})
	f.Add([]byte{0x05, 0x0c, 0xff, 0, 0x05, 0x1c, 0xff, 0, 0x05, 0x2c, 0xff, 0, 0x05, 0x3c, 0xff, 0, 0x05, 0x44, 0x20, 200})
	f.Add([]byte{0x0a, 0x0e, 0xff, 0, 0x0a, 0x4c, 0xff, 0, 0x0a, 0x54, 0x05, 0})
	f.Fuzz(runFuzzBlock1)
}

func runFuzzBlock1(t *testing.T, ops []byte) {
	{
		const maxBody = 2048
		fb := func(i int, path byte) byte { return byte(i*7) ^ path }
		h := HandlerFunc(func(w *ResponseWriter, r *Request) {
			p := r.Payload()
			if len(p) > maxBody {
				t.Fatalf("handler got %d bytes, limit %d", len(p), maxBody)
			}
			path := r.Path(0)[0]
			for i, c := range p {
				if c != fb(i, path) {
					t.Fatalf("byte %d of a body on path %c: %x, want %x", i, path, c, fb(i, path))
				}
			}
			w.Respond(coapmsg.Changed, nil)
		})
		m := NewMetrics(nil)
		opts := Options{BlockWise: true, MaxRequestBody: maxBody, BlockSize: 256, BlockPerPeer: 2, DedupShards: 1,
			BlockMaxBytes: 3 * (maxBody + bodyOverhead), BlockTimeout: time.Minute}
		e := NewEndpoint(h, discard{}, opts, nil, m)
		now := time.Unix(1000, 0)
		e.clock, e.epoch = func() time.Time { return now }, now
		var mid uint16
		if len(ops) > 4*256 { // enough for any interleaving of 4 peers' bodies; keeps an exec short
			ops = ops[:4*256]
		}
		for len(ops) >= 4 {
			op := ops[:4]
			ops = ops[4:]
			peer := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, op[0] & 3}), 5683)
			path := 'a' + (op[0]>>2)&3
			num, more, szx := uint32(op[1]>>4), op[1]&8 != 0, op[1]&7
			n := int(op[2]) * 5 // up to 1275 bytes
			if more && szx < 7 && op[2] == 0xff {
				n = 1 << (szx + 4) // a full block
			}
			off := int(num) << (szx + 4)
			payload := make([]byte, n)
			for i := range payload {
				payload[i] = fb(off+i, path)
			}
			mid++
			msg := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: mid, Token: []byte{1}, Payload: payload,
				Options: []coapmsg.Option{o(coapmsg.URIPath, string(path)), {Number: coapmsg.Block1, Value: coapmsg.AppendBlock(nil, num, more, szx)}}}
			b, err := msg.Append(nil)
			if err != nil {
				t.Fatal(err)
			}
			e.HandleDatagram(peer, b)
			now = now.Add(time.Duration(op[3]) * 100 * time.Millisecond)
			if _, held := e.BlockBodies(); held > opts.BlockMaxBytes {
				t.Fatalf("%d bytes held, limit %d", held, opts.BlockMaxBytes)
			}
		}
		bodies, held := e.BlockBodies()
		if testutil.ToFloat64(m.block1Bodies) != float64(bodies) || testutil.ToFloat64(m.block1Bytes) != float64(held) {
			t.Fatalf("gauges %v bodies %v bytes, held %d %d", testutil.ToFloat64(m.block1Bodies), testutil.ToFloat64(m.block1Bytes), bodies, held)
		}
		now = now.Add(time.Minute)
		e.bodies.expireAll(e.now())
		if bodies, held := e.BlockBodies(); bodies != 0 || held != 0 {
			t.Fatalf("%d bodies, %d bytes after the timeout", bodies, held)
		}
	}
}
