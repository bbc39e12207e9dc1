package loadgen

import "strconv"

// formats are the payload formats a device can send (Config.Format), by name: the Content-Format
// number and the function that appends one request's payload, the same reading in each — temp
// 21.5, the device's sequence number, and a pad string — so that their rates compare.
var formats = map[string]struct {
	cf     uint32
	append func(b []byte, seq uint64, pad []byte) []byte
}{
	"json": {50, func(b []byte, seq uint64, pad []byte) []byte {
		b = append(b, `{"temp":21.5,"seq":`...)
		b = strconv.AppendUint(b, seq, 10)
		b = append(b, `,"pad":"`...)
		b = append(b, pad...)
		return append(b, `"}`...)
	}},
	"cbor": {60, func(b []byte, seq uint64, pad []byte) []byte {
		b = append(b, 0xa3, 0x64, 't', 'e', 'm', 'p', 0xf9, 0x4d, 0x60, 0x63, 's', 'e', 'q')
		b = appendCBORHead(b, 0, seq)
		b = append(b, 0x63, 'p', 'a', 'd')
		b = appendCBORHead(b, 3, uint64(len(pad)))
		return append(b, pad...)
	}},
	"senml-json": {110, func(b []byte, seq uint64, pad []byte) []byte {
		b = append(b, `[{"n":"temp","v":21.5},{"n":"seq","v":`...)
		b = strconv.AppendUint(b, seq, 10)
		b = append(b, `},{"n":"pad","vs":"`...)
		b = append(b, pad...)
		return append(b, `"}]`...)
	}},
	"senml-cbor": {112, func(b []byte, seq uint64, pad []byte) []byte {
		b = append(b, 0x83, 0xa2, 0x00, 0x64, 't', 'e', 'm', 'p', 0x02, 0xf9, 0x4d, 0x60, 0xa2, 0x00, 0x63, 's', 'e', 'q', 0x02)
		b = appendCBORHead(b, 0, seq)
		b = append(b, 0xa2, 0x00, 0x63, 'p', 'a', 'd', 0x03)
		b = appendCBORHead(b, 3, uint64(len(pad)))
		return append(b, pad...)
	}},
}

// appendCBORHead appends a CBOR item head (RFC 8949 §3) of major type major and argument n.
func appendCBORHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= 0xff:
		return append(b, m|24, byte(n))
	case n <= 0xffff:
		return append(b, m|25, byte(n>>8), byte(n))
	case n <= 0xffffffff:
		return append(b, m|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, m|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// format returns c's payload format (json when unset).
func (c *Config) format() (cf uint32, appendPayload func(b []byte, seq uint64, pad []byte) []byte) {
	f, ok := formats[c.Format]
	if !ok {
		f = formats["json"]
	}
	return f.cf, f.append
}

// padLen is the pad that makes the reading's JSON form size bytes at seq (none if it is longer).
func padLen(size int, seq uint64) int {
	digits := 1
	for n := seq; n >= 10; n /= 10 {
		digits++
	}
	return max(0, size-len(`{"temp":21.5,"seq":,"pad":""}`)-digits)
}
