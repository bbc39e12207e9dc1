package coapmsg

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func TestAppendGolden(t *testing.T) {
	// Bytes written by hand from RFC 7252 §3 / Appendix A.
	for _, tc := range []struct {
		name string
		m    Message
		want []byte
	}{
		{"rfc-fig16-get-temperature",
			Message{Type: Confirmable, Code: GET, MID: 0x7d34, Options: []Option{opt(URIPath, "temperature")}},
			// Ver=1 T=0 TKL=0 | 0.01 | 0x7d34 | delta 11 len 11 | "temperature"
			cat(hx("40 01 7d 34 bb"), "temperature")},
		{"rfc-fig16-piggybacked-2.05",
			Message{Type: Acknowledgement, Code: Content, MID: 0x7d34, Payload: []byte("22.3 C")},
			cat(hx("60 45 7d 34 ff"), "22.3 C")},
		{"rfc-fig17-piggybacked-2.05-token",
			Message{Type: Acknowledgement, Code: Content, MID: 0x7d35, Token: []byte{0x20}, Payload: []byte("22.5 C")},
			cat(hx("61 45 7d 35 20 ff"), "22.5 C")},
		{"empty-ack", Message{Type: Acknowledgement, Code: Empty, MID: 0xbeef}, hx("60 00 be ef")},
		{"rst", Message{Type: Reset, Code: Empty, MID: 0x0102}, hx("70 00 01 02")},
		{"ping", Message{Type: Confirmable, Code: Empty, MID: 0}, hx("40 00 00 00")},
		{"non-2.04-token-8", Message{Type: NonConfirmable, Code: Changed, MID: 0xffff, Token: []byte("12345678")},
			cat(hx("58 44 ff ff"), "12345678")},
		{"post-uri-path-cf-json",
			Message{Type: Confirmable, Code: POST, MID: 0x3039, Token: []byte{1, 2, 3, 4},
				Options: []Option{opt(URIPath, "sensor"), opt(URIPath, "dev-1"), opt(ContentFormat, AppendUint(nil, uint32(FormatJSON)))},
				Payload: []byte(`{"t":1}`)},
			cat(hx("44 02 30 39 01020304 b6"), "sensor", hx("05"), "dev-1", hx("11 32 ff"), `{"t":1}`)},
		{"4.13-size1-1024", // Size1 60 = 13-form delta (0xd, ext 47), uint 1024 = 0x0400
			Message{Type: Acknowledgement, Code: RequestEntityTooLarge, MID: 9, Options: []Option{opt(Size1, AppendUint(nil, 1024))}},
			hx("60 8d 00 09 d2 2f 04 00")},
		{"5.03-max-age-30", // Max-Age 14 = 13-form delta, ext 1
			Message{Type: Acknowledgement, Code: ServiceUnavailable, MID: 9, Options: []Option{opt(MaxAge, AppendUint(nil, 30))}},
			hx("60 a3 00 09 d1 01 1e")},
		{"content-format-0-is-empty", // uint 0 encodes as zero bytes (§3.2)
			Message{Type: NonConfirmable, Code: Content, MID: 1, Options: []Option{opt(ContentFormat, AppendUint(nil, 0))}},
			hx("50 45 00 01 c0")},
		{"link-format-ct-40",
			Message{Type: Acknowledgement, Code: Content, MID: 2, Options: []Option{opt(ContentFormat, AppendUint(nil, uint32(FormatLinkFormat)))}, Payload: []byte("</a>")},
			cat(hx("60 45 00 02 c1 28 ff"), "</a>")},
		{"empty-payload-no-marker", Message{Type: Confirmable, Code: GET, MID: 1, Payload: []byte{}}, hx("40 01 00 01")},
		{"empty-token-slice", Message{Type: Confirmable, Code: GET, MID: 1, Token: []byte{}}, hx("40 01 00 01")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.m.Append(nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("Append\n got % x\nwant % x", got, tc.want)
			}
			var back Message
			if err := back.Decode(got); err != nil || !eqMsg(&back, &tc.m) {
				t.Fatalf("Decode(Append) = %v %+v", err, back)
			}
		})
	}
}

func TestRoundTripValidCases(t *testing.T) {
	// Every valid case is in canonical form: Decode then Append reproduces it exactly, and
	// Append of the expected message gives the input.
	for _, tc := range validCases() {
		t.Run(tc.name, func(t *testing.T) {
			var m Message
			if err := m.Decode(tc.in); err != nil {
				t.Fatal(err)
			}
			out, err := m.Append(nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, tc.in) {
				t.Fatalf("re-encoded\n got % x\nwant % x", out, tc.in)
			}
			out2, err := tc.want.Append(make([]byte, 0, 8))
			if err != nil || !bytes.Equal(out2, tc.in) {
				t.Fatalf("Append(want) = % x, %v", out2, err)
			}
		})
	}
}

func randMessage(r *rand.Rand) Message {
	m := Message{Type: Type(r.IntN(4)), Code: Code(r.IntN(256)), MID: uint16(r.Uint32())}
	if m.Code == Empty {
		return m // an Empty message carries nothing else (§4.1)
	}
	if n := r.IntN(9); n > 0 {
		m.Token = make([]byte, n)
		for i := range m.Token {
			m.Token[i] = byte(r.Uint32())
		}
	}
	num := 0
	for i, n := 0, r.IntN(20); i < n; i++ {
		var d int
		switch r.IntN(5) {
		case 0:
			d = 0
		case 1:
			d = r.IntN(13)
		case 2:
			d = 13 + r.IntN(256)
		case 3:
			d = 269 + r.IntN(2000)
		default:
			d = r.IntN(4)
		}
		if num+d > 65535 {
			break
		}
		num += d
		var l int
		switch r.IntN(4) {
		case 0:
			l = r.IntN(13)
		case 1:
			l = 13 + r.IntN(256)
		case 2:
			l = 269 + r.IntN(600)
		default:
			l = r.IntN(3)
		}
		v := make([]byte, l)
		for j := range v {
			v[j] = byte(r.Uint32())
		}
		m.Options = append(m.Options, Option{Number: uint16(num), Value: v})
	}
	if r.IntN(2) == 0 {
		m.Payload = make([]byte, 1+r.IntN(300))
		for j := range m.Payload {
			m.Payload[j] = byte(r.Uint32())
		}
	}
	return m
}

func TestRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var back Message
	buf := make([]byte, 0, 2048)
	for i := 0; i < 20_000; i++ {
		m := randMessage(r)
		var err error
		buf, err = m.Append(buf[:0])
		if err != nil {
			t.Fatalf("Append(%+v): %v", m, err)
		}
		if err := back.Decode(buf); err != nil {
			t.Fatalf("Decode(Append(%+v)) = %v\n% x", m, err, buf)
		}
		if !eqMsg(&back, &m) {
			t.Fatalf("round trip\n got %+v\nwant %+v", back, m)
		}
		checkDecoded(t, buf, &back)
	}
}

func TestRoundTripOptionBoundaries(t *testing.T) {
	// Every delta and length at and around the nibble / 13-form / 14-form boundaries, and the
	// longest expressible option value (65535+269 bytes).
	deltas := []int{0, 1, 11, 12, 13, 14, 267, 268, 269, 270, 1000, 65534, 65535}
	lengths := []int{0, 1, 12, 13, 14, 267, 268, 269, 270, 65535, 65535 + 268, maxOptionLen}
	var back Message
	for _, d := range deltas {
		for _, l := range lengths {
			v := rep(0xa5, l)
			m := Message{Type: NonConfirmable, Code: POST, MID: 1, Options: []Option{{Number: uint16(d), Value: v}}, Payload: []byte{1}}
			b, err := m.Append(nil)
			if err != nil {
				t.Fatalf("delta %d len %d: %v", d, l, err)
			}
			wantHdr := 1 + extLen(d) + extLen(l)
			if len(b) != 4+wantHdr+l+2 {
				t.Fatalf("delta %d len %d: encoded %d bytes, want %d", d, l, len(b), 4+wantHdr+l+2)
			}
			if err := back.Decode(b); err != nil || !eqMsg(&back, &m) {
				t.Fatalf("delta %d len %d: %v", d, l, err)
			}
		}
	}
	// Two options whose numbers differ by every boundary delta, starting high.
	for _, d := range deltas {
		if 65535-d < 0 {
			continue
		}
		m := Message{Type: Confirmable, Code: GET, Options: []Option{{Number: uint16(65535 - d)}, {Number: 65535, Value: []byte("x")}}}
		b, err := m.Append(nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := back.Decode(b); err != nil || !eqMsg(&back, &m) {
			t.Fatalf("high pair, delta %d: %v %+v", d, err, back)
		}
	}
}

func extLen(v int) int {
	switch {
	case v < 13:
		return 0
	case v < 269:
		return 1
	}
	return 2
}

func TestAppendOptionEncoding(t *testing.T) {
	for _, tc := range []struct {
		delta uint16
		n     int
		hdr   string
	}{
		{0, 0, "00"}, {12, 12, "cc"}, {13, 13, "dd 00 00"}, {268, 268, "dd ff ff"},
		{269, 269, "ee 0000 0000"}, {65535, 0, "e0 fef2"}, {0, 65535, "0e fef2"}, {0, maxOptionLen, "0e ffff"},
		{14, 270, "de 01 0001"},
	} {
		v := rep('q', tc.n)
		got := AppendOption([]byte{0xaa}, tc.delta, v)
		want := cat(0xaa, hx(tc.hdr), v)
		if !bytes.Equal(got, want) {
			t.Errorf("AppendOption(%d, %d bytes) header % x, want % x", tc.delta, tc.n, got[1:min(len(got), 6)], want[1:min(len(want), 6)])
		}
	}
}

func TestAppendErrors(t *testing.T) {
	prefix := []byte("prefix")
	for _, tc := range []struct {
		name string
		m    Message
	}{
		{"token-9", Message{Type: Confirmable, Code: GET, Token: rep(1, 9)}},
		{"token-255", Message{Type: Confirmable, Code: GET, Token: rep(1, 255)}},
		{"options-out-of-order", Message{Type: Confirmable, Code: GET, Options: []Option{opt(URIPath, "a"), opt(URIHost, "h")}}},
		{"options-out-of-order-late", Message{Type: Confirmable, Code: GET, Token: []byte{1},
			Options: []Option{opt(URIHost, "h"), opt(URIPath, "a"), opt(URIPath, "b"), opt(ETag, "e")}, Payload: []byte("p")}},
		{"type-4", Message{Type: 4, Code: GET}},
		{"type-255", Message{Type: 255, Code: GET}},
		{"option-too-long", Message{Type: Confirmable, Code: POST, Options: []Option{{Number: URIPath, Value: make([]byte, maxOptionLen+1)}}}},
		{"option-too-long-second", Message{Type: Confirmable, Code: POST,
			Options: []Option{opt(URIPath, "ok"), {Number: URIQuery, Value: make([]byte, 70000)}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := append(make([]byte, 0, 128), prefix...)
			out, err := tc.m.Append(b)
			if err == nil {
				t.Fatalf("Append succeeded: % x", out[:min(len(out), 32)])
			}
			// On error nothing of m is left appended: the caller's buffer is as it was.
			if !bytes.Equal(out, prefix) {
				t.Fatalf("Append returned %q after an error, want the original %q", out[:min(len(out), 32)], prefix)
			}
		})
	}
}

func TestAppendOntoPrefix(t *testing.T) {
	m := Message{Type: Reset, MID: 7}
	b, err := m.Append([]byte{0xde, 0xad})
	if err != nil || !bytes.Equal(b, hx("de ad 70 00 00 07")) {
		t.Fatalf("Append onto prefix = % x, %v", b, err)
	}
}

func TestAppendUintAndUint(t *testing.T) {
	for _, tc := range []struct {
		v    uint32
		want string
	}{
		{0, ""}, {1, "01"}, {0xff, "ff"}, {0x100, "0100"}, {0xffff, "ffff"}, {0x10000, "010000"},
		{0xffffff, "ffffff"}, {0x1000000, "01000000"}, {math.MaxUint32, "ffffffff"}, {1024, "0400"}, {60, "3c"},
	} {
		got := AppendUint([]byte{0x99}, tc.v)
		if !bytes.Equal(got, cat(0x99, hx(tc.want))) {
			t.Errorf("AppendUint(%#x) = % x, want 99 %s", tc.v, got, tc.want)
		}
		if v, ok := Uint(got[1:]); !ok || v != tc.v {
			t.Errorf("Uint(AppendUint(%#x)) = %#x %v", tc.v, v, ok)
		}
	}
	// Leading zeros are accepted (RFC 7252 §3.2: "MUST be prepared to process values with
	// leading zero bytes").
	for _, tc := range []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"", 0, true}, {"00", 0, true}, {"0000", 0, true}, {"00000000", 0, true}, {"0001", 1, true},
		{"000000ff", 255, true}, {"ffffffff", math.MaxUint32, true},
		{"0000000000", 0, false}, {"0100000000", 0, false}, {"ffffffffffffffff", 0, false},
	} {
		v, ok := Uint(hx(tc.in))
		if v != tc.want || ok != tc.ok {
			t.Errorf("Uint(%s) = %d %v, want %d %v", tc.in, v, ok, tc.want, tc.ok)
		}
	}
	// Random round trips with minimal length.
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 100_000; i++ {
		v := r.Uint32() >> r.IntN(32)
		b := AppendUint(nil, v)
		if len(b) > 0 && b[0] == 0 {
			t.Fatalf("AppendUint(%#x) = % x: not minimal", v, b)
		}
		if got, ok := Uint(b); !ok || got != v {
			t.Fatalf("Uint(AppendUint(%#x)) = %#x", v, got)
		}
	}
}

func ExampleMessage_Append() {
	m := Message{Type: Confirmable, Code: GET, MID: 0x7d34, Options: []Option{{Number: URIPath, Value: []byte("temperature")}}}
	b, _ := m.Append(nil)
	fmt.Printf("% x\n", b)
	// Output: 40 01 7d 34 bb 74 65 6d 70 65 72 61 74 75 72 65
}
