package envelope

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/record"
)

func seedRecord() record.Record {
	return record.Record{GW: "gw-1", Seq: 42, ReceivedAt: time.Unix(1530792000, 987654321).UTC(),
		Type: "x-node", ID: "xxxx-ssss-1111-2222", ContentFormat: record.NoContentFormat,
		Peer: "192.0.2.1:5683", Payload: []byte(`{"metric1":7,"metric2":19}`)}
}

// TestAppendSeedShape: the 2018 message, byte for byte, in the key order the 2018 ingestor
// wrote (JSON.stringify of {timestamp, ip, path, method, payload}).
func TestAppendSeedShape(t *testing.T) {
	rec := seedRecord()
	b, err := AppendSeed(nil, &rec)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"timestamp":1530792000,"ip":"192.0.2.1","path":"/x-node/xxxx-ssss-1111-2222","method":"POST","payload":"{\"metric1\":7,\"metric2\":19}"}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	rec.Peer, rec.ContentFormat = "[2001:db8::7]:61616", record.FormatJSON
	b, _ = AppendSeed(nil, &rec)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil || m["ip"] != "2001:db8::7" || len(m) != 5 {
		t.Fatalf("IPv6 peer: %s (%v)", b, err)
	}
}

// TestAppendSeedRefuses: a payload the 2018 message cannot carry with its meaning (not JSON, or
// not UTF-8) is ErrNotSeed, never a lossy conversion.
func TestAppendSeedRefuses(t *testing.T) {
	for name, mod := range map[string]func(*record.Record){
		"CBOR": func(r *record.Record) {
			r.ContentFormat = record.FormatCBOR
			r.Payload = []byte{0xa1, 0x61, 0x61, 0x01}
		},
		"SenML JSON": func(r *record.Record) {
			r.ContentFormat = record.FormatSenMLJSON
			r.Payload = []byte(`[{"n":"a","v":1}]`)
		},
		"not UTF-8": func(r *record.Record) { r.Payload = []byte("{\"a\":\"\xff\"}") },
	} {
		rec := seedRecord()
		mod(&rec)
		if _, err := AppendSeed(nil, &rec); !errors.Is(err, ErrNotSeed) {
			t.Errorf("%s: %v, want ErrNotSeed", name, err)
		}
	}
}

// TestSeedRoundTrip: what AppendSeed writes, DecodeSeed reads back: type, id, the payload byte
// for byte (quotes, backslashes, control characters, characters SQS refuses raw), the time in
// whole seconds and the peer's address.
func TestSeedRoundTrip(t *testing.T) {
	for _, p := range []string{`{"a":1}`, `{"s":"q\"uo\\te\n\u0001"}`, "{\"x\":\"\uFFFE\u00e9\U0001F600\"}", ` {"sp": true} `} {
		rec := seedRecord()
		rec.Payload = []byte(p)
		b, err := AppendSeed(nil, &rec)
		if err != nil {
			t.Fatal(err)
		}
		if !Allowed(b) {
			t.Fatalf("%q: body not SQS-safe: %q", p, b)
		}
		got, err := DecodeAny(string(b))
		if err != nil {
			t.Fatalf("%q: %v", p, err)
		}
		if got.Type != rec.Type || got.ID != rec.ID || string(got.Payload) != p || got.GW != SeedGW ||
			!got.ReceivedAt.Equal(time.Unix(1530792000, 0)) || got.Peer != "192.0.2.1" || got.ContentFormat != record.NoContentFormat {
			t.Fatalf("%q: decoded %+v", p, got)
		}
	}
}

// TestDecodeSeed: messages as the 2018 ingestor wrote them (any method, a query in the path),
// the key taken from the body, and the bodies its processor could not use refused.
func TestDecodeSeed(t *testing.T) {
	a := `{"timestamp":1530792000,"ip":"198.51.100.4","path":"/x-node/dev-1?x=1","method":"GET","payload":"{\"metric1\":7}"}`
	b := `{"timestamp":1530792000,"ip":"198.51.100.4","path":"//x-node//dev-1/","method":"PUT","payload":"{\"metric1\":8}"}`
	ra, err := DecodeSeed(a)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := DecodeSeed(b)
	if err != nil {
		t.Fatal(err)
	}
	if ra.Type != "x-node" || ra.ID != "dev-1" || rb.Type != "x-node" || rb.ID != "dev-1" || string(ra.Payload) != `{"metric1":7}` {
		t.Fatalf("decoded %+v / %+v", ra, rb)
	}
	again, _ := DecodeSeed(a)
	if ra.Seq == rb.Seq || again.Seq != ra.Seq {
		t.Fatalf("seq %d, %d, again %d: want one key per body", ra.Seq, rb.Seq, again.Seq)
	}
	for _, bad := range []string{
		`{"timestamp":1530792000,"ip":"a","path":"/x-node","method":"GET","payload":"{}"}`,
		`{"timestamp":1530792000,"ip":"a","path":"/a/b/c","method":"GET","payload":"{}"}`,
		`{"timestamp":1530792000.5,"ip":"a","path":"/a/b","method":"GET","payload":"{}"}`,
		`{"timestamp":"1530792000","ip":"a","path":"/a/b","method":"GET","payload":"{}"}`,
		`{"ip":"a","path":"/a/b","method":"GET","payload":"{}"}`,
		`{"timestamp":1,"ip":"a","path":"/a/b","method":"GET"}`,
		`{"timestamp":1,"ip":"a","path":"/a/b","payload":{"a":1}}`,
		`{"timestamp":1,"path":"/a/b","payload":"{}"} x`,
	} {
		if _, err := DecodeAny(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", bad, err)
		}
	}
}

// TestDecodeAnyTellsShapes: an envelope is read as an envelope (also one whose fields include
// "path", ignored), a 2018 message as one.
func TestDecodeAnyTellsShapes(t *testing.T) {
	env := `{"v":1,"path":"/a/b","gw":"g","seq":"7","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload":{"a":1}}`
	rec, err := DecodeAny(env)
	if err != nil || rec.GW != "g" || rec.Seq != 7 || rec.ID != "i" {
		t.Fatalf("envelope: %+v %v", rec, err)
	}
	if IsSeed(env) || IsSeed(`[1]`) || IsSeed(`{"timestamp":1}`) || !IsSeed(`{"path":"/a/b"}`) {
		t.Fatal("IsSeed")
	}
	if _, err := DecodeAny(`{"v":2,"path":"/a/b"}`); !errors.Is(err, ErrVersion) {
		t.Fatalf("unknown version: %v", err)
	}
}

// FuzzDecodeAny: no body makes DecodeAny panic, and a 2018 message it reads, written again,
// reads back the same.
func FuzzDecodeAny(f *testing.F) {
	f.Add(`{"timestamp":1530792000,"ip":"192.0.2.1","path":"/x-node/xxxx-ssss-1111-2222","method":"GET","payload":"{\"metric1\":7}"}`)
	f.Add(`{"timestamp":0,"path":"/a/b?#","payload":""}`)
	f.Add(`{"v":1,"gw":"g","seq":"7","received_at":"2026-05-01T12:00:00Z","type":"t","id":"i","payload":{"a":1}}`)
	f.Add(`{"path":"/a/b","path":"/c/d","timestamp":1e3,"payload":"\ud800"}`)
	f.Fuzz(func(t *testing.T, body string) {
		rec, err := DecodeAny(body)
		if err != nil || rec.GW != SeedGW {
			return
		}
		b, err := AppendSeed(nil, &rec)
		if err != nil {
			return // a payload that is not UTF-8 after unescaping cannot go back
		}
		again, err := DecodeSeed(string(b))
		if err != nil || again.Type != rec.Type || again.ID != rec.ID || string(again.Payload) != string(rec.Payload) || !again.ReceivedAt.Equal(rec.ReceivedAt) {
			t.Fatalf("%q → %q → %+v %v", body, b, again, err)
		}
	})
}
