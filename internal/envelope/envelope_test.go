package envelope

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coapgw/coapgw/internal/record"
)

func sample() record.Record {
	return record.Record{
		Seq:           42,
		GW:            "gw-eu-1a",
		ReceivedAt:    time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC),
		Type:          "sensor",
		ID:            "dev-7",
		ContentFormat: 50,
		Payload:       []byte(`{"temp":21.5}`),
		Peer:          "192.0.2.1:5683",
	}
}

func equal(t *testing.T, got, want record.Record) {
	t.Helper()
	if got.Seq != want.Seq || got.GW != want.GW || !got.ReceivedAt.Equal(want.ReceivedAt) ||
		got.Type != want.Type || got.ID != want.ID || got.ContentFormat != want.ContentFormat ||
		got.Peer != want.Peer || !bytes.Equal(got.Payload, want.Payload) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
}

func roundTrip(t *testing.T, rec record.Record) string {
	t.Helper()
	body, err := Encode(rec)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	if !Allowed([]byte(body)) {
		t.Fatalf("body has characters SQS rejects: %q", body)
	}
	got, err := Decode(body)
	if err != nil {
		t.Fatalf("Decode(%q): %v", body, err)
	}
	equal(t, got, rec)
	return body
}

func TestRoundTrip(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	long := strings.Repeat("x", MaxFieldBytes)
	cases := []struct {
		name   string
		edit   func(*record.Record)
		inline bool // payload expected inline as JSON
	}{
		{"json object inline", func(r *record.Record) {}, true},
		{"json array inline", func(r *record.Record) { r.Payload = []byte(`[1,2,{"a":"b"}]`); r.ContentFormat = 110 }, true},
		{"json with whitespace inside", func(r *record.Record) { r.Payload = []byte("{\n\t\"a\" : [ 1 , 2 ]\r\n}") }, true},
		{"json with unicode", func(r *record.Record) { r.Payload = []byte(`{"name":"Zürich 東京 🚀"}`) }, true},
		{"json with leading space goes base64", func(r *record.Record) { r.Payload = []byte(` {"a":1}`) }, false},
		{"json scalar goes base64", func(r *record.Record) { r.Payload = []byte(`21.5`) }, false},
		{"invalid json goes base64", func(r *record.Record) { r.Payload = []byte(`{"a":}`) }, false},
		{"json with U+FFFE goes base64", func(r *record.Record) { r.Payload = []byte("{\"a\":\"\uFFFE\"}") }, false},
		{"json with invalid utf-8 goes base64", func(r *record.Record) { r.Payload = []byte("{\"a\":\"\xff\"}") }, false},
		{"cbor binary", func(r *record.Record) {
			r.Payload = []byte{0xa1, 0x64, 't', 'e', 'm', 'p', 0xf9, 0x4d, 0x60}
			r.ContentFormat = 60
		}, false},
		{"every byte value", func(r *record.Record) { r.Payload = all; r.ContentFormat = 42 }, false},
		{"empty payload", func(r *record.Record) { r.Payload = nil }, false},
		{"no content format", func(r *record.Record) { r.ContentFormat = record.NoContentFormat }, true},
		{"content format 0", func(r *record.Record) { r.ContentFormat = 0 }, true},
		{"no peer", func(r *record.Record) { r.Peer = "" }, true},
		{"ipv6 peer", func(r *record.Record) { r.Peer = "[2001:db8::1]:61616" }, true},
		{"max seq", func(r *record.Record) { r.Seq = ^uint64(0) }, true},
		{"seq 0", func(r *record.Record) { r.Seq = 0 }, true},
		{"max field sizes", func(r *record.Record) { r.GW, r.Type, r.ID, r.Peer = long, long, long, long }, true},
		{"strings needing escapes", func(r *record.Record) {
			r.GW = "gw \"quoted\" \\ back\x00\x01\x1f\t\n\r\x7f"
			r.Type = "t\uFFFE\uFFFF\u2028"
			r.ID = "ïd-😀"
		}, true},
		{"epoch", func(r *record.Record) { r.ReceivedAt = time.Unix(0, 0).UTC() }, true},
		{"whole second", func(r *record.Record) { r.ReceivedAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }, true},
		{"before 1970", func(r *record.Record) { r.ReceivedAt = time.Unix(0, -1).UTC() }, true},
		{"latest representable", func(r *record.Record) { r.ReceivedAt = time.Unix(0, 1<<63-1).UTC() }, true},
		{"earliest representable", func(r *record.Record) { r.ReceivedAt = time.Unix(0, -1<<63).UTC() }, true},
		{"large binary", func(r *record.Record) {
			r.Payload = bytes.Repeat([]byte{0, 0xff, 0x80, '"'}, 190_000) // 760,000 bytes: about 1 MiB of base64
		}, false},
		{"large json", func(r *record.Record) {
			r.Payload = []byte(`{"a":"` + strings.Repeat("é", 500_000) + `"}`)
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := sample()
			c.edit(&rec)
			body := roundTrip(t, rec)
			if got := strings.Contains(body, `"payload":`); got != c.inline {
				t.Errorf("payload inline = %v, want %v: %.200s", got, c.inline, body)
			}
			if c.inline && !strings.Contains(body, `"payload":`+string(rec.Payload)+`}`) && len(rec.Payload) > 0 {
				t.Errorf("inline payload not verbatim: %.200s", body)
			}
		})
	}
}

func TestEncodeIsCanonical(t *testing.T) {
	got, err := Encode(sample())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"v":1,"gw":"gw-eu-1a","seq":"42","received_at":"2026-05-01T12:00:00.123456789Z",` +
		`"type":"sensor","id":"dev-7","content_format":50,"peer":"192.0.2.1:5683","payload":{"temp":21.5}}`
	if got != want {
		t.Fatalf("Encode:\n got %s\nwant %s", got, want)
	}
	// Non-UTC times are written in UTC.
	rec := sample()
	rec.ReceivedAt = rec.ReceivedAt.In(time.FixedZone("X", 3600))
	if got2, _ := Encode(rec); got2 != want {
		t.Fatalf("time zone leaked into the envelope: %s", got2)
	}
}

func TestEncodeErrors(t *testing.T) {
	cases := []struct {
		name string
		edit func(*record.Record)
		is   error
	}{
		{"no gw", func(r *record.Record) { r.GW = "" }, nil},
		{"no type", func(r *record.Record) { r.Type = "" }, nil},
		{"no id", func(r *record.Record) { r.ID = "" }, nil},
		{"gw too long", func(r *record.Record) { r.GW = strings.Repeat("g", 256) }, record.ErrTooLong},
		{"peer too long", func(r *record.Record) { r.Peer = strings.Repeat("p", 256) }, record.ErrTooLong},
		{"invalid utf-8 id", func(r *record.Record) { r.ID = "dev\xff" }, ErrNotText},
		{"zero time", func(r *record.Record) { r.ReceivedAt = time.Time{} }, nil},
		{"year 3000", func(r *record.Record) { r.ReceivedAt = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC) }, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := sample()
			c.edit(&rec)
			_, err := Encode(rec)
			if err == nil {
				t.Fatal("Encode succeeded")
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Fatalf("err = %v, want %v", err, c.is)
			}
		})
	}
}

const valid = `{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":""}`

// badBodies are bodies Decode must reject with ErrMalformed; they also seed FuzzDecode.
var badBodies = []string{
	``,
	` `,
	`null`,
	`[]`,
	`"str"`,
	`{`,
	`{}`,
	`{"v":1}`,
	valid + `x`,
	valid + `{}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i"}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload":{},"payload_b64":""}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload":"text"}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload":null}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload":{"a":}}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":"AA"}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":"AB=="}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":"AA==\n"}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":"*"}`,
	`{"v":1,"gw":"g","seq":1,"received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":""}`,
	`{"v":1,"gw":"g","seq":"-1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":""}`,
	`{"v":1,"gw":"g","seq":"+1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":""}`,
	`{"v":1,"gw":"g","seq":"18446744073709551616","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":""}`,
	`{"v":1,"gw":"g","seq":"","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":""}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"yesterday","type":"t","id":"i","payload_b64":""}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"3000-01-01T00:00:00Z","type":"t","id":"i","payload_b64":""}`,
	`{"v":1,"gw":"g","seq":"1","received_at":1714564800,"type":"t","id":"i","payload_b64":""}`,
	`{"v":1,"gw":"","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":""}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":7,"payload_b64":""}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"` + strings.Repeat("t", 256) + `","id":"i","payload_b64":""}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","content_format":65536,"payload_b64":""}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","content_format":-1,"payload_b64":""}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","content_format":"50","payload_b64":""}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","peer":null,"payload_b64":""}`,
	`{"v":1,"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":""}`,
	`{"v":1,"gw":"g","gw":"h","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":""}`,
	`{"v":"1","gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":""}`,
	`{"v":1.0,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":""}`,
	`{"v":0,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":""}`,
	`{"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":""}`,
	`{"V":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":""}`,
	`{"v":1,"GW":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":""}`,
	"{\"v\":1,\"gw\":\"g\xff\",\"seq\":\"1\",\"received_at\":\"2026-05-01T12:00:00Z\",\"type\":\"t\",\"id\":\"i\",\"payload_b64\":\"\"}",
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":"","x":[}`,
	`{"v":1,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
	base64.StdEncoding.EncodeToString([]byte(valid)),
}

// otherVersions are bodies of versions this reader does not know; also FuzzDecode seeds.
var otherVersions = []string{
	`{"v":2,"gw":"g","seq":"1","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload_b64":""}`,
	`{"v":2}`,
	`{"gw":{"name":"g"},"seq":1,"v":3,"data":"AA=="}`,
	`{"v":18446744073709551615,"gw":"g"}`,
}

func TestDecodeRejects(t *testing.T) {
	if _, err := Decode(valid); err != nil {
		t.Fatalf("the valid base body fails: %v", err)
	}
	for _, b := range badBodies {
		rec, err := Decode(b)
		if !errors.Is(err, ErrMalformed) || errors.Is(err, ErrVersion) {
			t.Errorf("Decode(%.120q) = %+v, %v; want ErrMalformed", b, rec, err)
		}
	}
}

func TestDecodeRejectsUnknownMajorVersion(t *testing.T) {
	for _, b := range otherVersions {
		_, err := Decode(b)
		if !errors.Is(err, ErrVersion) {
			t.Errorf("Decode(%q) err = %v, want ErrVersion", b, err)
		}
	}
}

func TestDecodeIgnoresUnknownFields(t *testing.T) {
	body := `{"zzz":{"nested":[1,2,{"v":9}]},"v":1,"gw":"g","seq":"7","received_at":"2026-05-01T14:00:00.5+02:00",` +
		`"type":"t","id":"i","trace_id":"abc","payload":{"a":1},"future":null}`
	rec, err := Decode(body)
	if err != nil {
		t.Fatal(err)
	}
	want := record.Record{Seq: 7, GW: "g", ReceivedAt: time.Date(2026, 5, 1, 12, 0, 0, 5e8, time.UTC), Type: "t", ID: "i",
		ContentFormat: record.NoContentFormat, Payload: []byte(`{"a":1}`)}
	equal(t, rec, want)
	if rec.ReceivedAt.Location() != time.UTC {
		t.Errorf("received_at not in UTC: %v", rec.ReceivedAt)
	}
}

func TestAllowed(t *testing.T) {
	for _, c := range []struct {
		s  string
		ok bool
	}{
		{"plain \t\r\n text", true},
		{"\x00", false},
		{"\x1f", false},
		{"\x7f", true},
		{"\uD7FF\uE000\uFFFD\U00010000\U0010FFFF", true},
		{"\uFFFE", false},
		{"\uFFFF", false},
		{"\xed\xa0\x80", false}, // an encoded surrogate: not valid UTF-8
		{"\xff", false},
	} {
		if got := Allowed([]byte(c.s)); got != c.ok {
			t.Errorf("Allowed(%q) = %v, want %v", c.s, got, c.ok)
		}
	}
}

// TestDocExamples keeps docs/envelope.md honest: every ```json block in it is a body this package
// decodes, and re-encoding it gives back exactly the same text (the examples are canonical).
func TestDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/envelope.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)\n```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) < 2 {
		t.Fatalf("found %d json examples in the doc", len(blocks))
	}
	for _, b := range blocks {
		body := b[1]
		rec, err := Decode(body)
		if err != nil {
			t.Errorf("doc example does not decode: %v\n%s", err, body)
			continue
		}
		again, err := Encode(rec)
		if err != nil || again != body {
			t.Errorf("doc example is not what Encode writes:\n doc %s\n enc %s (%v)", body, again, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	rec := sample()
	good, _ := Encode(rec)
	f.Add(good)
	rec.Payload = []byte{0, 1, 2, 0xff}
	rec.ContentFormat = 60
	bin, _ := Encode(rec)
	f.Add(bin)
	f.Add(valid)
	for _, b := range badBodies {
		f.Add(b)
	}
	for _, b := range otherVersions {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body string) {
		rec, err := Decode(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
				t.Fatalf("error wraps neither ErrMalformed nor ErrVersion: %v", err)
			}
			return
		}
		// Whatever decodes must encode again (to SQS-safe text) and decode to the same record.
		again, err := Encode(rec)
		if err != nil {
			t.Fatalf("decoded %q but cannot encode %+v: %v", body, rec, err)
		}
		if !utf8.ValidString(again) || !Allowed([]byte(again)) {
			t.Fatalf("encoded body not SQS-safe: %q", again)
		}
		rec2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-encoded body does not decode: %v\n%s", err, again)
		}
		equal(t, rec2, rec)
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add(uint64(1), "gw", int64(1714564800123456789), "sensor", "dev-1", uint16(50), "1.2.3.4:5", []byte(`{"a":1}`))
	f.Add(uint64(0), "g\x00\uFFFE", int64(-1), "t", "i", uint16(0xFFFF), "", []byte{0xff, 0})
	f.Fuzz(func(t *testing.T, seq uint64, gw string, ns int64, typ, id string, cf uint16, peer string, payload []byte) {
		rec := record.Record{Seq: seq, GW: gw, ReceivedAt: time.Unix(0, ns).UTC(), Type: typ, ID: id,
			ContentFormat: cf, Peer: peer, Payload: payload}
		body, err := Encode(rec)
		if err != nil {
			return // invalid UTF-8, empty or over-long fields: refused, never mangled
		}
		if !Allowed([]byte(body)) {
			t.Fatalf("body not SQS-safe: %q", body)
		}
		got, err := Decode(body)
		if err != nil {
			t.Fatalf("Decode(Encode(%+v)): %v", rec, err)
		}
		equal(t, got, rec)
	})
}

func BenchmarkEncode(b *testing.B) {
	rec := sample()
	rec.Payload = []byte(`{"temp":21.5,"hum":40,"bat":3.01,"rssi":-97,"fw":"1.4.2","seq":123456}`)
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		buf, err = Append(buf[:0], &rec)
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	rec := sample()
	rec.Payload = []byte(`{"temp":21.5,"hum":40,"bat":3.01,"rssi":-97,"fw":"1.4.2","seq":123456}`)
	body, _ := Encode(rec)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}
