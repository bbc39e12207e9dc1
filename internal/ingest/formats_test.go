package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/record"
)

// TestJSONCBOREquivalence is the property that makes CBOR a second spelling of JSON: a random
// object sent as JSON and as CBOR is accepted or refused alike by the device API's checks, and
// when accepted gives the same document (state, history numbers, size, properties). The objects
// break the rules now and then (empty keys, NUL, nesting past 6) so that refusals are compared
// too.
func TestJSONCBOREquivalence(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ems := []cbor.EncMode{}
	for _, o := range []cbor.EncOptions{{}, {ShortestFloat: cbor.ShortestFloat16}} {
		em, err := o.EncMode()
		if err != nil {
			t.Fatal(err)
		}
		ems = append(ems, em)
	}
	accepted, refused := 0, 0
	for i := range 3000 {
		obj := randObject(rng, 1)
		var jb bytes.Buffer
		enc := json.NewEncoder(&jb)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(obj); err != nil {
			t.Fatal(err)
		}
		js := bytes.TrimSpace(jb.Bytes())
		cb, err := ems[i%2].Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		errJSON := checkJSONObject(js, 6)
		// The device API does not scan a CBOR payload's JSON form: the conversion keeps the rules,
		// and the device API checks without writing it (CheckCBOR), for the same answer.
		conv, errCBOR := record.ToJSON(nil, record.FormatCBOR, cb, 6, 0)
		if _, errCheck := record.CheckCBOR(nil, cb, 6); fmt.Sprint(errCheck) != fmt.Sprint(errCBOR) {
			t.Fatalf("%x: CheckCBOR %v, conversion %v", cb, errCheck, errCBOR)
		}
		if errCBOR == nil {
			if err := checkJSONObject(conv, 6); err != nil {
				t.Fatalf("%x converts to %s, which breaks a rule: %v", cb, conv, err)
			}
		}
		if (errJSON == nil) != (errCBOR == nil) {
			t.Fatalf("%s: JSON check %v, CBOR check %v", js, errJSON, errCBOR)
		}
		if errJSON != nil {
			refused++
			continue
		}
		accepted++
		dj, err1 := processor.DecodeJSON(js, 7)
		dc, err2 := processor.DecodeCBOR(cb, 7)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: decode JSON %v, CBOR %v", js, err1, err2)
		}
		var sj, sc any
		if err := json.Unmarshal(dj.AppendState(nil), &sj); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(dc.AppendState(nil), &sc); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(sj, sc) || numbers(dj) != numbers(dc) || dj.Properties() != dc.Properties() || dj.Depth() != dc.Depth() {
			t.Fatalf("JSON %s gives state %s\nCBOR %x gives %s", js, dj.AppendState(nil), cb, dc.AppendState(nil))
		}
	}
	if accepted < 1000 || refused < 100 {
		t.Fatalf("%d accepted, %d refused: the generator does not cover both", accepted, refused)
	}
}

func numbers(d *processor.Doc) string {
	var b strings.Builder
	d.Numbers(func(path string, v float64) { fmt.Fprintf(&b, "%s=%v;", path, v) })
	return b.String()
}

func randObject(rng *rand.Rand, depth int) map[string]any {
	m := map[string]any{}
	for range rng.IntN(5) {
		m[randString(rng, true)] = randValue(rng, depth)
	}
	return m
}

func randValue(rng *rand.Rand, depth int) any {
	switch rng.IntN(9) {
	case 0:
		if depth < 7 {
			return randObject(rng, depth+1)
		}
		return nil
	case 1:
		if depth < 7 {
			a := make([]any, rng.IntN(4))
			for i := range a {
				a[i] = randValue(rng, depth+1)
			}
			return a
		}
		return true
	case 2:
		return rng.Int64N(1<<40) - 1<<39
	case 3:
		return rng.Uint64()
	case 4:
		return math.Float64frombits(rng.Uint64()&^(0x7ff<<52) | uint64(rng.IntN(0x7fe))<<52) // finite
	case 5:
		return float64(rng.IntN(2000)) / 8
	case 6:
		return randString(rng, false)
	case 7:
		return rng.IntN(2) == 0
	}
	return nil
}

func randString(rng *rand.Rand, key bool) string {
	alphabet := []string{"a", "b", "temp", "\"", "\\", "\n", "\x01", "é", "💡", "<"}
	if rng.IntN(40) == 0 {
		alphabet = append(alphabet, "\x00")
	}
	n := rng.IntN(4)
	if key && n == 0 && rng.IntN(4) != 0 {
		n = 1 // mostly nonempty keys
	}
	var b strings.Builder
	for range n {
		b.WriteString(alphabet[rng.IntN(len(alphabet))])
	}
	return b.String()
}

// TestFormatsStored: a CBOR map, a SenML JSON pack and a SenML CBOR pack get 2.04 and are stored
// byte for byte with their Content-Format, for the processor to decode.
func TestFormatsStored(t *testing.T) {
	senmlCBOR, _ := cbor.Marshal([]map[int]any{{-2: "d/", 0: "temp", 1: "Cel", 2: 21.5}})
	for _, c := range []struct {
		name    string
		cf      uint16
		payload string
	}{
		{"CBOR", record.FormatCBOR, "\xa1\x64temp\xf9\x4d\x60"},
		{"SenML JSON", record.FormatSenMLJSON, `[{"bn":"d/","n":"temp","u":"Cel","v":21.5},{"n":"temp","t":-60,"v":21}]`},
		{"SenML CBOR", record.FormatSenMLCBOR, string(senmlCBOR)},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			resp := r.do(coapmsg.POST, append(pathOpts("a", "b"), cf(byte(c.cf))), c.payload)
			if resp.Code != coapmsg.Changed {
				t.Fatalf("code %v %q, want 2.04", resp.Code, resp.Payload)
			}
			var rec record.Record
			if r.sp.stored() != 1 || record.Decode(r.sp.data[0], &rec) != nil {
				t.Fatalf("%d records stored, want 1", r.sp.stored())
			}
			if rec.ContentFormat != c.cf || string(rec.Payload) != c.payload {
				t.Errorf("stored cf %d %x, want cf %d %x", rec.ContentFormat, rec.Payload, c.cf, c.payload)
			}
		})
	}
}

// TestBenchPayloadsAgree: the benchmark's payloads are the same reading.
func TestBenchPayloadsAgree(t *testing.T) {
	want := string(benchPayloads[record.FormatJSON])
	for f, p := range benchPayloads {
		js, err := record.ToJSON(nil, f, p, 6, 0)
		if err != nil || string(js) != want {
			t.Errorf("format %d: %s, %v; want %s", f, js, err, want)
		}
	}
}

// TestHealthInCBOR: GET /health with Accept 60 gets the same answer as a CBOR map, Content-Format
// 60; Accept 50 and none get JSON; another Accept gets 4.06.
func TestHealthInCBOR(t *testing.T) {
	r := newRig(t)
	pad := coapmsg.Option{Number: coapmsg.URIHost, Value: []byte(strings.Repeat("h", 60))} // no Echo needed
	for _, c := range []struct {
		accept []coapmsg.Option
		code   coapmsg.Code
		cf     uint32
	}{
		{[]coapmsg.Option{cf(60)}, coapmsg.Content, 60},
		{[]coapmsg.Option{cf(50)}, coapmsg.Content, 50},
		{nil, coapmsg.Content, 50},
		{[]coapmsg.Option{cf(41)}, coapmsg.NotAcceptable, 0},
	} {
		opts := append(pathOpts("health"), pad)
		for _, a := range c.accept {
			opts = append(opts, coapmsg.Option{Number: coapmsg.Accept, Value: a.Value})
		}
		resp := r.do(coapmsg.GET, opts, "")
		if resp.Code != c.code {
			t.Fatalf("accept %v: %v %q", c.accept, resp.Code, resp.Payload)
		}
		if c.code != coapmsg.Content {
			continue
		}
		var got uint32
		if o, ok := resp.Option(coapmsg.ContentFormat); ok {
			got, _ = coapmsg.Uint(o)
		}
		var v map[string]any
		var err error
		if c.cf == 60 {
			err = cbor.Unmarshal(resp.Payload, &v)
		} else {
			err = json.Unmarshal(resp.Payload, &v)
		}
		if got != c.cf || err != nil || v["status"] != "ok" || len(v) != 4 {
			t.Errorf("accept %v: cf %d, %v %v; want cf %d with status ok and 4 keys", c.accept, got, v, err, c.cf)
		}
	}
}

// FuzzCBORRules: whatever CBOR the conversion accepts keeps the JSON rules (the device API does
// not scan a CBOR payload's JSON form) — duplicate keys in any spelling, NUL, depth included —
// and the processor decodes it.
func FuzzCBORRules(f *testing.F) {
	for _, s := range []string{"\xa2\x61\x61\x01\x61\x61\x02", "\xa1\x60\x01", "\xa1\x61\x61\x61\x00",
		"\xbf\x7f\x61\x61\xff\x01\x61\x61\x02\xff", "\xa9\x61a\x01\x61b\x01\x61c\x01\x61d\x01\x61e\x01\x61f\x01\x61g\x01\x61h\x01\x61a\x01"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		js, err := record.CBORToJSON(nil, b, 6)
		if err != nil {
			return
		}
		if err := checkJSONObject(js, 6); err != nil {
			t.Fatalf("%x converts to %s, which breaks a rule: %v", b, js, err)
		}
		// What the device API accepts, the processor decodes: never set aside.
		if _, err := processor.DecodeCBOR(b, 1); err != nil {
			t.Fatalf("%x accepted, the processor cannot decode it: %v", b, err)
		}
	})
}

// FuzzSenMLRules: the device API decides on a SenML pack from its readings
// (record.JSONFormKeepsRules) without scanning its JSON form; whatever pack that passes, the JSON
// form keeps the rules, and a pack it does not pass is still decided by the form's check.
// SenMLPack.Check, which validate calls, says the same as Parse (the same error, or none) and
// JSONFormKeepsRules; the processor decodes what is accepted.
func FuzzSenMLRules(f *testing.F) {
	for _, s := range []string{`[{"n":"a","vs":"x"},{"n":"a","v":1}]`, `[{"n":"a","vs":"\\u0000"}]`, `[{"n":"a","vs":"é\t"}]`,
		`[{"n":"a","v":1e308,"bv":1e308}]`, `[{"n":"a","s":1e308},{"n":"b","bs":1e308,"s":1e308}]`, `[{"n":"a","v":-0.5e-3,"s":"x"}]`} {
		f.Add(true, []byte(s))
	}
	for _, s := range []string{"\x81\xa2\x00\x61a\x03\x61\x00", "\x81\xa2\x00\x61a\x03\x62\xc3\xa9", "\x82\xa2\x00\x61a\x02\x01\xa2\x00\x61a\x08\x41\x00"} {
		f.Add(false, []byte(s))
	}
	f.Fuzz(func(t *testing.T, isJSON bool, b []byte) {
		cf := uint16(record.FormatSenMLCBOR)
		if isJSON {
			cf = record.FormatSenMLJSON
		}
		var pk, ck record.SenMLPack // ck: what validate calls
		err := pk.Parse(cf, b, 1)
		if _, cerr := ck.Check(cf, b, 1); fmt.Sprint(cerr) != fmt.Sprint(err) {
			t.Fatalf("%x: Check says %v, Parse %v", b, cerr, err)
		}
		if err != nil {
			return
		}
		js := record.SenMLToJSON(nil, pk.Readings)
		keeps := record.JSONFormKeepsRules(pk.Readings)
		if err := checkJSONObject(js, 1); keeps && err != nil {
			t.Fatalf("%x: readings pass, JSON form %s breaks a rule: %v", b, js, err)
		}
		if got, err := ck.Check(cf, b, 1); err != nil || got != keeps {
			t.Fatalf("%x: Check says %v, %v; Parse accepted, JSONFormKeepsRules %v", b, got, err, keeps)
		}
		// What the device API accepts (the readings, or the form's check, say the rules hold),
		// the processor decodes, into the readings Parse gave: never set aside.
		if formErr := checkJSONObject(js, 6); keeps || formErr == nil {
			_, rs, err := processor.SenMLDecoder(cf).DecodeReadings(b, 1)
			if err != nil || fmt.Sprint(rs) != fmt.Sprint(pk.Readings) {
				t.Fatalf("%x accepted; the processor gives %v, %v, Parse %v", b, rs, err, pk.Readings)
			}
		}
	})
}

// TestSenMLChecks: a SenML pack's string values decide validate's answer as the JSON form's check
// does, whether the readings alone can tell (plain text) or not (NUL, a backslash before u0000).
func TestSenMLChecks(t *testing.T) {
	for _, c := range []struct {
		name, payload string
		cf            byte
		code          coapmsg.Code
	}{
		{"plain", `[{"n":"a","vs":"x"}]`, 110, coapmsg.Changed},
		{"backslash u0000", `[{"n":"a","vs":"\\u0000"}]`, 110, coapmsg.Changed},
		{"escaped NUL", `[{"n":"a","vs":"\u0000"}]`, 110, coapmsg.BadRequest},
		{"CBOR NUL", "\x81\xa2\x00\x61a\x03\x61\x00", 112, coapmsg.BadRequest},
		{"CBOR text", "\x81\xa2\x00\x61a\x03\x62\xc3\xa9", 112, coapmsg.Changed},
		{"CBOR bytes", "\x81\xa2\x00\x61a\x08\x41\x00", 112, coapmsg.Changed},
	} {
		var pk record.SenMLPack
		if err := pk.Parse(uint16(c.cf), []byte(c.payload), 1); err == nil {
			slow := checkJSONObject(record.SenMLToJSON(nil, pk.Readings), 6)
			if (slow == nil) != (c.code == coapmsg.Changed) {
				t.Errorf("%s: the JSON form's check says %v, the case wants %s", c.name, slow, c.code)
			}
		}
		r := newRig(t)
		if got := r.do(coapmsg.POST, append(pathOpts("a", "b"), cf(c.cf)), c.payload); got.Code != c.code {
			t.Errorf("%s: %v %q, want %v", c.name, got.Code, got.Payload, c.code)
		} else if stored := len(r.sp.data) != 0; stored != (c.code == coapmsg.Changed) {
			t.Errorf("%s: stored %v", c.name, stored)
		}
	}
}
