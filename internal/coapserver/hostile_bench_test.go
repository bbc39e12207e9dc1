package coapserver

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// manyOptions is a request of typ and code with MID mid, token "tk", Uri-Path "t" and then n-1
// empty instances of the elective option 1000, one byte each after the first: 14,000 options
// make a datagram of about 14 KB.
func manyOptions(typ coapmsg.Type, code coapmsg.Code, mid uint16, n int) []byte {
	b := []byte{0x40 | byte(typ)<<4 | 2, byte(code), byte(mid >> 8), byte(mid), 't', 'k', 0xb1, 't'}
	if n > 1 {
		b = append(b, 0xe0, 0x02, 0xd0) // delta 989 → option 1000, length 0
		b = append(b, bytes.Repeat([]byte{0}, n-2)...)
	}
	return b
}

// BenchmarkHandleDatagram14KB compares two 14 KB CON POSTs: one with a 14 KB payload, and one with
// 14,000 empty elective options. The second must cost about what the first does.
func BenchmarkHandleDatagram14KB(b *testing.B) {
	normal := post(coapmsg.Confirmable, 0, "tk")
	normal.Payload = bytes.Repeat([]byte{'1'}, 14_000)
	cases := []struct {
		name string
		make func(mid uint16) []byte
	}{
		{"payload", func(mid uint16) []byte { normal.MID = mid; return enc(b, normal) }},
		{"options", func(mid uint16) []byte { return manyOptions(coapmsg.Confirmable, coapmsg.POST, mid, 14_000) }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			e := NewEndpoint(&countingHandler{}, discard{}, Options{}, nil, nil)
			reqs := make([][]byte, 64)
			for i := range reqs {
				reqs[i] = c.make(uint16(i))
			}
			b.SetBytes(int64(len(reqs[0])))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 14), byte(i >> 6)}), 5683)
				e.HandleDatagram(p, reqs[i%len(reqs)])
			}
		})
	}
}
