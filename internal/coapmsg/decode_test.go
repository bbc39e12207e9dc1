package coapmsg

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

type validCase struct {
	name string
	in   []byte
	want Message
}

func opt(n uint16, v any) Option {
	switch x := v.(type) {
	case string:
		return Option{Number: n, Value: []byte(x)}
	case []byte:
		return Option{Number: n, Value: x}
	}
	panic("opt")
}

// validCases are well-formed datagrams (RFC 7252 §3) with the message each decodes to. Every
// one is in canonical form, so Append must reproduce it byte for byte.
func validCases() []validCase {
	cs := []validCase{
		// RFC 7252 Appendix A, Figure 16: CON [0x7d34] GET /temperature, no token, and the
		// piggybacked ACK [0x7d34] 2.05 "22.3 C".
		{"rfc7252-fig16-get", hx("40 01 7d 34 bb 74656d7065726174757265"),
			Message{Type: Confirmable, Code: GET, MID: 0x7d34, Options: []Option{opt(URIPath, "temperature")}}},
		{"rfc7252-fig16-ack-2.05", cat(hx("60 45 7d 34 ff"), "22.3 C"),
			Message{Type: Acknowledgement, Code: Content, MID: 0x7d34, Payload: []byte("22.3 C")}},
		// Figure 17: same with a 1-byte token 0x20.
		{"rfc7252-fig17-get-token", cat(hx("41 01 7d 35 20 bb"), "temperature"),
			Message{Type: Confirmable, Code: GET, MID: 0x7d35, Token: []byte{0x20}, Options: []Option{opt(URIPath, "temperature")}}},
		{"rfc7252-fig17-ack-token", cat(hx("61 45 7d 35 20 ff"), "22.5 C"),
			Message{Type: Acknowledgement, Code: Content, MID: 0x7d35, Token: []byte{0x20}, Payload: []byte("22.5 C")}},
		// A widely published example: CON GET, token "test", Uri-Path "example".
		{"get-token-test-example", hx("44 01 c4 09 74657374 b7 6578616d706c65"),
			Message{Type: Confirmable, Code: GET, MID: 0xc409, Token: []byte("test"), Options: []Option{opt(URIPath, "example")}}},

		// Empty messages (§4.1): ping, empty ACK, RST; an empty NON is syntactically valid too.
		{"empty-con-ping", hx("40 00 12 34"), Message{Type: Confirmable, Code: Empty, MID: 0x1234}},
		{"empty-non", hx("50 00 00 01"), Message{Type: NonConfirmable, Code: Empty, MID: 1}},
		{"empty-ack", hx("60 00 ab cd"), Message{Type: Acknowledgement, Code: Empty, MID: 0xabcd}},
		{"rst", hx("70 00 ff ff"), Message{Type: Reset, Code: Empty, MID: 0xffff}},

		// All four types with a non-empty code and nothing else.
		{"con-post-bare", hx("40 02 00 00"), Message{Type: Confirmable, Code: POST}},
		{"non-put-bare", hx("50 03 00 07"), Message{Type: NonConfirmable, Code: PUT, MID: 7}},
		{"ack-2.04-bare", hx("60 44 00 08"), Message{Type: Acknowledgement, Code: Changed, MID: 8}},
		{"rst-with-code", hx("70 80 00 09"), Message{Type: Reset, Code: BadRequest, MID: 9}}, // codec does not police RST codes
		// Reserved classes 1.xx, 6.xx, 7.xx parse; rejecting them is the server's job.
		{"class-1.00", hx("40 20 00 01"), Message{Type: Confirmable, Code: MakeCode(1, 0), MID: 1}},
		{"class-6.00", hx("40 c0 00 01"), Message{Type: Confirmable, Code: MakeCode(6, 0), MID: 1}},
		{"class-7.31", hx("50 ff 00 01"), Message{Type: NonConfirmable, Code: MakeCode(7, 31), MID: 1}},

		// Payloads.
		{"payload-1-byte", hx("50 02 00 01 ff 00"), Message{Type: NonConfirmable, Code: POST, MID: 1, Payload: []byte{0}}},
		{"payload-all-ff", hx("50 02 00 01 ff ff ff ff"), Message{Type: NonConfirmable, Code: POST, MID: 1, Payload: []byte{0xff, 0xff, 0xff}}},
		{"payload-1024", cat(hx("40 02 00 01 ff"), rep('x', 1024)), Message{Type: Confirmable, Code: POST, MID: 1, Payload: rep('x', 1024)}},
		{"token-and-payload", hx("42 02 00 01 aa bb ff 7b 7d"), Message{Type: Confirmable, Code: POST, MID: 1, Token: []byte{0xaa, 0xbb}, Payload: []byte("{}")}},

		// Typical gateway POST: token, Uri-Path ×2, Content-Format json (50), payload.
		{"post-json", cat(hx("44 02 30 39 01020304 b6"), "sensor", hx("05"), "dev-1", hx("11 32 ff"), `{"t":21.5}`),
			Message{Type: Confirmable, Code: POST, MID: 12345, Token: []byte{1, 2, 3, 4},
				Options: []Option{opt(URIPath, "sensor"), opt(URIPath, "dev-1"), opt(ContentFormat, []byte{50})},
				Payload: []byte(`{"t":21.5}`)}},
		// Repeated options (delta 0), zero-length values, option 0, and values containing 0xff.
		{"option-0-empty", hx("40 01 00 01 00"), Message{Type: Confirmable, Code: GET, MID: 1, Options: []Option{opt(0, "")}}},
		{"repeated-empty-uri-path", hx("40 01 00 01 b0 00 00"),
			Message{Type: Confirmable, Code: GET, MID: 1, Options: []Option{opt(11, ""), opt(11, ""), opt(11, "")}}},
		{"if-none-match-empty", hx("40 03 00 01 50"), Message{Type: Confirmable, Code: PUT, MID: 1, Options: []Option{opt(IfNoneMatch, "")}}},
		{"option-value-ff", hx("40 01 00 01 42 ff ff 01 ff"),
			Message{Type: Confirmable, Code: GET, MID: 1, Options: []Option{opt(ETag, []byte{0xff, 0xff}), opt(ETag, []byte{0xff})}}},
		{"options-then-payload-0xff-first", hx("40 02 00 01 c1 32 ff ff"),
			Message{Type: Confirmable, Code: POST, MID: 1, Options: []Option{opt(ContentFormat, []byte{50})}, Payload: []byte{0xff}}},
		// Known options with their deltas: Uri-Host 3 (+3), ETag 4 (+1), Uri-Port 7 (+3),
		// Uri-Path 11 (+4), Content-Format 12 (+1), Uri-Query 15 (+3), Block1 27 (+12, last
		// plain nibble), Size1 60 (+33 = 13-form with extended byte 20).
		{"many-known-options", cat(hx("40 02 00 01"), hx("31 68"), hx("12 0102"), hx("31 16"), hx("41 61"),
			hx("11 32"), hx("31 3c"), hx("c1 05"), hx("d2 14 0400")),
			Message{Type: Confirmable, Code: POST, MID: 1, Options: []Option{
				opt(URIHost, "h"), opt(ETag, []byte{1, 2}), opt(URIPort, []byte{22}), opt(URIPath, "a"),
				opt(ContentFormat, []byte{50}), opt(URIQuery, "<"), opt(Block1, []byte{5}), opt(Size1, []byte{4, 0})}}},
	}
	// Tokens of every legal length 0–8.
	for n := 0; n <= 8; n++ {
		tok := []byte("abcdefgh")[:n]
		m := Message{Type: Confirmable, Code: GET, MID: uint16(n)}
		if n > 0 {
			m.Token = tok
		}
		cs = append(cs, validCase{fmt.Sprintf("token-%d", n), cat(byte(0x40|n), 0x01, 0x00, byte(n), tok), m})
		cs = append(cs, validCase{fmt.Sprintf("token-%d-payload", n), cat(byte(0x50|n), 0x45, 0x00, byte(n), tok, 0xff, "p"),
			Message{Type: NonConfirmable, Code: Content, MID: uint16(n), Token: m.Token, Payload: []byte("p")}})
	}

	// Option delta boundaries: plain nibble up to 12, 13-form (1 extra byte, +13) up to 268,
	// 14-form (2 extra bytes, +269) up to 65535.
	for _, d := range []struct {
		num uint16
		hdr string
	}{
		{0, "00"}, {1, "10"}, {12, "c0"}, {13, "d0 00"}, {14, "d0 01"}, {255, "d0 f2"}, {268, "d0 ff"},
		{269, "e0 0000"}, {270, "e0 0001"}, {1000, "e0 02db"}, {65000, "e0 fcdb"}, {65535, "e0 fef2"},
	} {
		cs = append(cs, validCase{fmt.Sprintf("delta-%d", d.num), cat(hx("40 01 00 01"), hx(d.hdr)),
			Message{Type: Confirmable, Code: GET, MID: 1, Options: []Option{opt(d.num, "")}}})
	}
	// Option length boundaries, same forms.
	for _, l := range []struct {
		n   int
		hdr string
	}{
		{0, "b0"}, {1, "b1"}, {12, "bc"}, {13, "bd 00"}, {14, "bd 01"}, {268, "bd ff"},
		{269, "be 0000"}, {270, "be 0001"}, {1024, "be 02f3"}, {2000, "be 06c3"},
	} {
		v := rep('v', l.n)
		cs = append(cs, validCase{fmt.Sprintf("length-%d", l.n), cat(hx("40 01 00 01"), hx(l.hdr), v),
			Message{Type: Confirmable, Code: GET, MID: 1, Options: []Option{opt(URIPath, v)}}})
	}
	// Both extended fields at once, delta first then length (§3.1 order), then a payload.
	cs = append(cs, validCase{"ext-delta-and-length", cat(hx("40 02 00 01 ed 0003 00"), rep('z', 13), hx("ff 01")),
		Message{Type: Confirmable, Code: POST, MID: 1, Options: []Option{opt(272, rep('z', 13))}, Payload: []byte{1}}})
	cs = append(cs, validCase{"ext13-delta-ext14-length", cat(hx("40 02 00 01 de 00 0000"), rep('y', 269)),
		Message{Type: Confirmable, Code: POST, MID: 1, Options: []Option{opt(13, rep('y', 269))}}})
	// Option numbers summing exactly to 65535 over several deltas.
	cs = append(cs, validCase{"sum-to-65535", cat(hx("40 01 00 01 e0 fe e6 c0")),
		Message{Type: Confirmable, Code: GET, MID: 1, Options: []Option{opt(65523, ""), opt(65535, "")}}})
	cs = append(cs, validCase{"65535-repeated", cat(hx("40 01 00 01 e0 fe f2 00 01 61")),
		Message{Type: Confirmable, Code: GET, MID: 1, Options: []Option{opt(65535, ""), opt(65535, ""), opt(65535, "a")}}})
	// More options than Message's inline storage (16) holds.
	many := cat(hx("40 01 00 01"))
	var manyOpts []Option
	for i := 0; i < 40; i++ {
		many = append(many, 0x01, byte('a'+i%26))
		manyOpts = append(manyOpts, Option{Number: 0, Value: []byte{byte('a' + i%26)}})
	}
	cs = append(cs, validCase{"40-options", many, Message{Type: Confirmable, Code: GET, MID: 1, Options: manyOpts}})
	return cs
}

func TestDecodeValid(t *testing.T) {
	for _, tc := range validCases() {
		t.Run(tc.name, func(t *testing.T) {
			var m Message
			if err := m.Decode(tc.in); err != nil {
				t.Fatalf("Decode(% x): %v", tc.in, err)
			}
			if !eqMsg(&m, &tc.want) {
				t.Fatalf("Decode(% x)\n got %+v\nwant %+v", tc.in, m, tc.want)
			}
			checkDecoded(t, tc.in, &m)
			if len(tc.want.Token) == 0 && m.Token != nil {
				t.Errorf("Token = %v, want nil for TKL 0", m.Token)
			}
			if len(tc.want.Payload) == 0 && m.Payload != nil {
				t.Errorf("Payload = %v, want nil without a payload marker", m.Payload)
			}
			// Header agrees with Decode.
			ht, hc, hmid, ok := Header(tc.in)
			if !ok || ht != m.Type || hc != m.Code || hmid != m.MID {
				t.Errorf("Header = %v %v %#x %v, want %v %v %#x true", ht, hc, hmid, ok, m.Type, m.Code, m.MID)
			}
		})
	}
}

type badCase struct {
	name string
	in   []byte
	want errKind
}

// dnsReply is a real-shaped DNS answer (example.com A 93.184.216.34) with the given ID.
func dnsReply(id uint16) []byte {
	return cat(byte(id>>8), byte(id), hx("8180 0001 0001 0000 0000"),
		hx("07"), "example", hx("03"), "com", hx("00 0001 0001"),
		hx("c00c 0001 0001 00000e10 0004 5db8d822"))
}

// badCases are TESTPLAN A1–A3 inputs with the error kind each must produce.
func badCases() []badCase {
	cs := []badCase{
		// A1: 0–3 byte datagrams → ErrShort, whatever the bytes.
		{"nil", nil, kindShort},
		{"empty", []byte{}, kindShort},
		{"1-byte", hx("40"), kindShort},
		{"2-bytes", hx("40 01"), kindShort},
		{"3-bytes", hx("40 01 00"), kindShort},
		{"3-bytes-version-0", hx("00 00 00"), kindShort},
		{"3-bytes-ff", hx("ff ff ff"), kindShort},

		// A1: versions 0, 2, 3 → ErrVersion (silently ignored, §3), even when otherwise valid.
		{"version-0", hx("00 01 00 01"), kindVersion},
		{"version-2", hx("80 01 00 01"), kindVersion},
		{"version-3", hx("c0 01 00 01"), kindVersion},
		{"version-0-empty", hx("00 00 00 00"), kindVersion},
		{"version-2-with-options", cat(hx("84 01 00 01 01020304 bb"), "temperature"), kindVersion},
		{"version-3-all-ff", hx("ff ff ff ff ff ff"), kindVersion},
		{"version-0-tkl-15", hx("0f 01 00 01"), kindVersion},

		// A1: a DNS reply: its ID decides the "version"; neither panics nor decodes silently.
		{"dns-reply-id-db42", dnsReply(0xdb42), kindVersion},
		{"dns-reply-id-1234", dnsReply(0x1234), kindVersion},
		{"dns-reply-id-5a3c", dnsReply(0x5a3c), kindFormat}, // v1, TKL 10

		// A1: token length 9–15 → format error (§3: reserved), also on an Empty code.
		{"tkl-15-empty-code", hx("4f 00 00 01"), kindFormat},
		{"tkl-9-empty-code-with-bytes", cat(hx("49 00 00 01"), rep(0, 9)), kindFormat},

		// A3: Empty message with token or bytes → format error (§4.1).
		{"empty-with-token", hx("41 00 00 01 aa"), kindFormat},
		{"empty-with-tkl-but-no-token", hx("41 00 00 01"), kindFormat},
		{"empty-with-8-byte-token", cat(hx("68 00 00 01"), rep(1, 8)), kindFormat},
		{"empty-with-trailing-byte", hx("40 00 00 01 00"), kindFormat},
		{"empty-with-payload-marker", hx("40 00 00 01 ff"), kindFormat},
		{"empty-with-payload", hx("60 00 00 01 ff 01"), kindFormat},
		{"empty-with-option", hx("70 00 00 01 b1 61"), kindFormat},
		{"rst-with-token", hx("71 00 00 01 01"), kindFormat},

		// Token longer than the datagram.
		{"token-truncated-1-of-8", hx("48 01 00 01 aa"), kindFormat},
		{"token-truncated-0-of-1", hx("41 01 00 01"), kindFormat},
		{"token-truncated-7-of-8", cat(hx("48 01 00 01"), rep(1, 7)), kindFormat},

		// A2: payload marker followed by nothing (§3).
		{"marker-no-payload", hx("40 01 00 01 ff"), kindFormat},
		{"marker-no-payload-after-token", hx("42 01 00 01 aabb ff"), kindFormat},
		{"marker-no-payload-after-option", cat(hx("40 01 00 01 b4"), "abcd", hx("ff")), kindFormat},

		// A2: delta nibble 15 without being the payload marker; length nibble 15.
		{"delta-15-length-0", hx("40 01 00 01 f0"), kindFormat},
		{"delta-15-length-1", hx("40 01 00 01 f1 00"), kindFormat},
		{"delta-15-length-13", hx("40 01 00 01 fd 00 00"), kindFormat},
		{"delta-15-length-14", hx("40 01 00 01 fe 00 00 00"), kindFormat},
		{"delta-15-after-option", hx("40 01 00 01 b1 61 f0"), kindFormat},
		{"length-15-delta-0", hx("40 01 00 01 0f"), kindFormat},
		{"length-15-delta-11", cat(hx("40 01 00 01 bf"), rep('a', 20)), kindFormat},
		{"length-15-delta-13", hx("40 01 00 01 df 00 00"), kindFormat},
		{"length-15-delta-14", hx("40 01 00 01 ef 00 00 00"), kindFormat},

		// A2: truncated extended delta/length fields.
		{"ext13-delta-missing", hx("40 01 00 01 d0"), kindFormat},
		{"ext14-delta-missing", hx("40 01 00 01 e0"), kindFormat},
		{"ext14-delta-half", hx("40 01 00 01 e0 00"), kindFormat},
		{"ext13-length-missing", hx("40 01 00 01 0d"), kindFormat},
		{"ext14-length-missing", hx("40 01 00 01 0e"), kindFormat},
		{"ext14-length-half", hx("40 01 00 01 0e 00"), kindFormat},
		{"ext13-delta-ok-ext13-length-missing", hx("40 01 00 01 dd 00"), kindFormat},
		{"ext14-delta-ok-ext14-length-half", hx("40 01 00 01 ee 00 00 01"), kindFormat},
		{"ext-missing-after-token", hx("41 01 00 01 aa d0"), kindFormat},

		// A2: option values running past the datagram.
		{"value-1-short", hx("40 01 00 01 b3 61 62"), kindFormat},
		{"value-missing", hx("40 01 00 01 b1"), kindFormat},
		{"value-ext13-missing", hx("40 01 00 01 bd 00"), kindFormat},
		{"value-ext13-short", cat(hx("40 01 00 01 bd 00"), rep('a', 12)), kindFormat},
		{"value-ext14-269-short", cat(hx("40 01 00 01 be 00 00"), rep('a', 268)), kindFormat},
		{"value-ext14-max-claimed", hx("40 01 00 01 be ff ff 61"), kindFormat},    // claims 65804
		{"value-past-then-marker", hx("40 01 00 01 b2 ff"), kindFormat},           // marker swallowed as value, then short
		{"value-past-after-good", cat(hx("40 01 00 01 b1 61 02 61")), kindFormat}, // second one short

		// A2: option numbers overflowing 65535.
		{"delta-65536", hx("40 01 00 01 e0 fe f3"), kindFormat},
		{"delta-65804", hx("40 01 00 01 e0 ff ff"), kindFormat},
		{"sum-65535-plus-1", hx("40 01 00 01 e0 fe f2 10"), kindFormat},
		{"sum-65535-plus-13", hx("40 01 00 01 e0 fe f2 d0 00"), kindFormat},
		{"sum-two-big-deltas", hx("40 01 00 01 e0 80 00 e0 80 00"), kindFormat},
		{"sum-ext14-max-twice", hx("40 01 00 01 e0 7f 00 e0 7f 00 e0 7f 00"), kindFormat},
	}
	// Token lengths 9–15 on otherwise plausible requests, with and without enough bytes.
	for n := 9; n <= 15; n++ {
		cs = append(cs,
			badCase{fmt.Sprintf("tkl-%d", n), cat(byte(0x40|n), 0x01, 0x00, 0x01, rep(0xaa, n)), kindFormat},
			badCase{fmt.Sprintf("tkl-%d-bare", n), cat(byte(0x50|n), 0x02, 0x00, 0x01), kindFormat},
			badCase{fmt.Sprintf("tkl-%d-ack", n), cat(byte(0x60|n), 0x45, 0x00, 0x01, rep(0xaa, n), 0xff, 'x'), kindFormat},
		)
	}
	// Every version × a few shapes.
	for v := 0; v < 4; v++ {
		if v == 1 {
			continue
		}
		for ty := 0; ty < 4; ty++ {
			cs = append(cs, badCase{fmt.Sprintf("version-%d-type-%d", v, ty), cat(byte(v<<6|ty<<4), 0x01, 0x00, 0x01), kindVersion})
		}
	}
	return cs
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range badCases() {
		t.Run(tc.name, func(t *testing.T) {
			var m Message
			err := m.Decode(tc.in)
			if got := kindOf(err); got != tc.want {
				t.Fatalf("Decode(% x) = %v (%v), want %v", tc.in, err, got, tc.want)
			}
			// Consistency with Header: a format error always has a parseable header (so a CON
			// can be answered with RST carrying its MID); ErrShort/ErrVersion never do.
			_, _, mid, ok := Header(tc.in)
			if ok != (tc.want == kindFormat) {
				t.Fatalf("Header ok = %v for %v", ok, tc.want)
			}
			if ok && mid != uint16(tc.in[2])<<8|uint16(tc.in[3]) {
				t.Fatalf("Header MID = %#x", mid)
			}
			if tc.want == kindFormat {
				var fe *FormatError
				errors.As(err, &fe)
				if !strings.HasPrefix(err.Error(), "message format error: ") || fe.Reason == "" {
					t.Fatalf("Error() = %q", err.Error())
				}
				if errors.Is(err, ErrShort) || errors.Is(err, ErrVersion) {
					t.Fatalf("format error also matches a sentinel: %v", err)
				}
			}
		})
	}
}

func TestDecodeDNSReplyAllIDs(t *testing.T) {
	// Whatever the 16-bit ID, a DNS reply never panics and never yields an error kind other
	// than the three the package defines; IDs 0x4000–0x7fff look like version 1.
	var m Message
	for hi := 0; hi < 256; hi++ {
		for _, lo := range []int{0, 0x42, 0xff} {
			in := dnsReply(uint16(hi<<8 | lo))
			err := m.Decode(in)
			k := kindOf(err)
			if hk := headerKind(in); hk != kindOK {
				if k != hk {
					t.Fatalf("id %#04x: %v, want %v", hi<<8|lo, k, hk)
				}
				continue
			}
			switch k {
			case kindOK:
				checkDecoded(t, in, &m)
			case kindFormat:
			default:
				t.Fatalf("id %#04x: unexpected %v", hi<<8|lo, err)
			}
		}
	}
}

func TestDecodeRandomBytes(t *testing.T) {
	r := rand.New(rand.NewPCG(7252, 3))
	var m Message
	counts := map[errKind]int{}
	buf := make([]byte, 0, 256)
	for i := 0; i < 200_000; i++ {
		n := r.IntN(64)
		if i%10 == 0 {
			n = r.IntN(256)
		}
		buf = buf[:n]
		for j := range buf {
			buf[j] = byte(r.Uint32())
		}
		if n > 0 && i%2 == 0 {
			buf[0] = buf[0]&0x3f | 0x40 // force version 1 half the time to reach the option parser
		}
		err := m.Decode(buf)
		k := kindOf(err)
		counts[k]++
		if hk := headerKind(buf); hk != kindOK {
			if k != hk {
				t.Fatalf("Decode(% x) = %v, want %v", buf, err, hk)
			}
			continue
		}
		switch k {
		case kindOK:
			checkDecoded(t, buf, &m)
		case kindFormat:
		default:
			t.Fatalf("Decode(% x) = %v (%v)", buf, err, k)
		}
	}
	t.Logf("random datagrams by outcome: %v", counts)
	if counts[kindOK] == 0 || counts[kindFormat] == 0 {
		t.Fatalf("random inputs did not exercise both outcomes: %v", counts)
	}
}

func TestDecodeReusesMessage(t *testing.T) {
	var m Message
	big := validCases()
	// Dirty m with a long message, then decode each case and compare with a fresh decode:
	// nothing of a previous datagram may leak into the next.
	var dirty []byte
	for _, c := range big {
		if c.name == "40-options" {
			dirty = c.in
		}
	}
	for _, tc := range big {
		if err := m.Decode(dirty); err != nil {
			t.Fatal(err)
		}
		if err := m.Decode(tc.in); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !eqMsg(&m, &tc.want) {
			t.Fatalf("%s after reuse:\n got %+v\nwant %+v", tc.name, m, tc.want)
		}
		if len(tc.want.Token) == 0 && m.Token != nil || len(tc.want.Payload) == 0 && m.Payload != nil {
			t.Fatalf("%s: stale token/payload after reuse: %+v", tc.name, m)
		}
	}
	// After an error, the next good datagram still decodes cleanly.
	for _, bc := range badCases() {
		_ = m.Decode(dirty)
		_ = m.Decode(bc.in)
		if err := m.Decode(big[0].in); err != nil || !eqMsg(&m, &big[0].want) {
			t.Fatalf("after %s: %v %+v", bc.name, err, m)
		}
	}
}

func TestDecodeAliasesDatagram(t *testing.T) {
	in := cat(hx("42 02 00 01 aabb b3"), "abc", hx("ff"), "xyz")
	var m Message
	if err := m.Decode(in); err != nil {
		t.Fatal(err)
	}
	// Appending to an option value must not overwrite the bytes after it in the datagram.
	v := m.Options[0].Value
	_ = append(v, 'Q', 'Q')
	if !bytes.Equal(in[10:], cat(hx("ff"), "xyz")) {
		t.Fatalf("append to an option value clobbered the datagram: % x", in)
	}
	// Slices alias the datagram (documented): no copy was made.
	in[5] = 'Z'
	in[len(in)-1] = 'Z'
	if m.Token[1] != 'Z' || m.Payload[2] != 'Z' {
		t.Fatalf("token/payload do not alias the datagram")
	}
}

func TestDecodeConcurrentSharedDatagram(t *testing.T) {
	// Decode only reads the datagram; many goroutines may decode the same bytes (run with -race).
	cs := validCases()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var m Message
			for i := 0; i < 50; i++ {
				for _, tc := range cs {
					if err := m.Decode(tc.in); err != nil || !eqMsg(&m, &tc.want) {
						t.Errorf("%s: %v", tc.name, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

func TestHeader(t *testing.T) {
	for _, tc := range []struct {
		in  []byte
		ok  bool
		t   Type
		c   Code
		mid uint16
	}{
		{nil, false, 0, 0, 0},
		{[]byte{}, false, 0, 0, 0},
		{hx("40"), false, 0, 0, 0},
		{hx("40 01 00"), false, 0, 0, 0},
		{hx("00 01 00 01"), false, 0, 0, 0},
		{hx("80 01 00 01"), false, 0, 0, 0},
		{hx("c0 01 00 01"), false, 0, 0, 0},
		{hx("ff ff ff ff ff"), false, 0, 0, 0},
		{hx("40 01 12 34"), true, Confirmable, GET, 0x1234},
		{hx("50 02 00 00"), true, NonConfirmable, POST, 0},
		{hx("60 45 ff ff"), true, Acknowledgement, Content, 0xffff},
		{hx("70 00 ab cd"), true, Reset, Empty, 0xabcd},
		// Garbage after a valid v1 header: Header still answers, so a CON can get its RST.
		{hx("4f ff 01 02 ff ff f0 0f"), true, Confirmable, MakeCode(7, 31), 0x0102},
		{cat(hx("48 01 ca fe"), "x"), true, Confirmable, GET, 0xcafe}, // token truncated
		{hx("7f 00 00 01"), true, Reset, Empty, 1},
	} {
		ty, c, mid, ok := Header(tc.in)
		if ok != tc.ok || ty != tc.t || c != tc.c || mid != tc.mid {
			t.Errorf("Header(% x) = %v %v %#x %v, want %v %v %#x %v", tc.in, ty, c, mid, ok, tc.t, tc.c, tc.mid, tc.ok)
		}
	}
}

func TestOptionAndCount(t *testing.T) {
	m := Message{Options: []Option{opt(URIHost, "h"), opt(URIPath, "a"), opt(URIPath, "b"), opt(ContentFormat, []byte{50}), opt(Size1, []byte{1})}}
	if v, ok := m.Option(URIPath); !ok || string(v) != "a" {
		t.Errorf("Option(URIPath) = %q %v, want first value", v, ok)
	}
	if v, ok := m.Option(Size1); !ok || !bytes.Equal(v, []byte{1}) {
		t.Errorf("Option(Size1) = %v %v", v, ok)
	}
	for _, n := range []uint16{0, ETag, URIQuery, Block1, 65535} {
		if _, ok := m.Option(n); ok {
			t.Errorf("Option(%d) found", n)
		}
	}
	if m.Count(URIPath) != 2 || m.Count(URIHost) != 1 || m.Count(ETag) != 0 {
		t.Errorf("Count wrong: %d %d %d", m.Count(URIPath), m.Count(URIHost), m.Count(ETag))
	}
	var empty Message
	if _, ok := empty.Option(URIPath); ok || empty.Count(URIPath) != 0 {
		t.Error("empty message has options")
	}
	// Zero-length option present is distinguishable from absent.
	m2 := Message{Options: []Option{opt(IfNoneMatch, "")}}
	if v, ok := m2.Option(IfNoneMatch); !ok || len(v) != 0 {
		t.Errorf("Option(IfNoneMatch) = %v %v", v, ok)
	}
}

func TestCodeAndType(t *testing.T) {
	for _, tc := range []struct {
		c          Code
		s          string
		class, det uint8
		req, resp  bool
	}{
		{Empty, "0.00", 0, 0, false, false},
		{GET, "0.01", 0, 1, true, false},
		{DELETE, "0.04", 0, 4, true, false},
		{MakeCode(0, 31), "0.31", 0, 31, true, false},
		{MakeCode(1, 0), "1.00", 1, 0, false, false},
		{Created, "2.01", 2, 1, false, true},
		{Content, "2.05", 2, 5, false, true},
		{RequestEntityTooLarge, "4.13", 4, 13, false, true},
		{UnsupportedFormat, "4.15", 4, 15, false, true},
		{ProxyingNotSupported, "5.05", 5, 5, false, true},
		{MakeCode(6, 0), "6.00", 6, 0, false, false},
		{MakeCode(7, 31), "7.31", 7, 31, false, false},
	} {
		if tc.c.String() != tc.s || tc.c.Class() != tc.class || tc.c.Detail() != tc.det ||
			tc.c.IsRequest() != tc.req || tc.c.IsResponse() != tc.resp {
			t.Errorf("%v: got %s %d.%d req=%v resp=%v", tc.s, tc.c, tc.c.Class(), tc.c.Detail(), tc.c.IsRequest(), tc.c.IsResponse())
		}
	}
	// Wire values from RFC 7252 §12.1: 2.05 = 0x45 = 69, 4.04 = 0x84 = 132.
	if uint8(Content) != 0x45 || uint8(NotFound) != 0x84 || uint8(ServiceUnavailable) != 0xa3 {
		t.Errorf("code wire values wrong")
	}
	if MakeCode(2, 37) != MakeCode(2, 5) {
		t.Errorf("MakeCode does not mask detail to 5 bits")
	}
	for ty, s := range map[Type]string{Confirmable: "CON", NonConfirmable: "NON", Acknowledgement: "ACK", Reset: "RST", 4: "Type(4)"} {
		if ty.String() != s {
			t.Errorf("Type(%d).String() = %q", ty, ty.String())
		}
	}
	for n, c := range map[uint16]bool{IfMatch: true, URIHost: true, ETag: false, IfNoneMatch: true, URIPath: true,
		ContentFormat: false, MaxAge: false, URIQuery: true, Accept: true, Block2: true, Block1: true, Size1: false, ProxyURI: true} {
		if Critical(n) != c {
			t.Errorf("Critical(%d) = %v", n, !c)
		}
	}
}

func TestDecodeErrorReasons(t *testing.T) {
	// The reason names the defect, for logs and for the 4.00/RST diagnostics.
	for in, want := range map[string]string{
		"49 01 00 01":          "token length",
		"41 00 00 01 aa":       "empty message",
		"42 01 00 01 aa":       "token runs past",
		"40 01 00 01 ff":       "payload marker",
		"40 01 00 01 e0 fe f3": "over 65535",
		"40 01 00 01 b3 61":    "value runs past",
		"40 01 00 01 d0":       "truncated extended option delta",
		"40 01 00 01 0e 00":    "truncated extended option length",
		"40 01 00 01 f0":       "delta nibble 15",
		"40 01 00 01 0f":       "length nibble 15",
	} {
		var m Message
		err := m.Decode(hx(in))
		if kindOf(err) != kindFormat || !strings.Contains(err.Error(), want) {
			t.Errorf("Decode(%s) = %v, want a format error mentioning %q", in, err, want)
		}
	}
}
