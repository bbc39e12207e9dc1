package record

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

func TestCBORToJSON(t *testing.T) {
	cases := []struct {
		name, hex string
		want      string // JSON; "" when an error is wanted
		err       string // a substring of the error
	}{
		{"empty map", "a0", `{}`, ""},
		{"ints", "a3616100616217613a1bffffffffffffffff", `{"a":0,"b":23,":":18446744073709551615}`, ""},
		{"negative ints", "a261612061623bffffffffffffffff", `{"a":-1,"b":-18446744073709551616}`, ""},
		{"half float", "a16174f94d60", `{"t":21.5}`, ""},
		{"single float 0.1", "a16174fa3dcccccd", `{"t":0.1}`, ""},
		{"double float", "a16174fb3fb999999999999a", `{"t":0.1}`, ""},
		{"double integral", "a16174fb4034000000000000", `{"t":20}`, ""},
		{"tiny double", "a16174fb3e7ad7f29abcaf48", `{"t":1e-7}`, ""},
		{"1e-6 double", "a16174fb3eb0c6f7a0b5ed8d", `{"t":0.000001}`, ""},
		{"simple values", "a3616af4616bf5616cf6", `{"j":false,"k":true,"l":null}`, ""},
		{"nested", "a1616182a161780180", `{"a":[{"x":1},[]]}`, ""},
		{"indefinite", "bf6161 9f0102ff 7f6161 6162ff 6163ff", `{"a":[1,2],"ab":"c"}`, ""},
		{"escapes", "a16171 66 22 5c 0a 01 c3a9", `{"q":"\"\\\n\u0001é"}`, ""},
		{"not a map", "80", "", "must be a CBOR map"},
		{"JSON text", hex.EncodeToString([]byte(`{"a":1}`)), "", "must be a CBOR map"},
		{"byte string", "a1616141ff", "", "byte strings"},
		{"tag", "a16174c11a5f000000", "", "tags"},
		{"undefined", "a16175f7", "", "undefined"},
		{"simple 16", "a16175f0", "", "simple value"},
		{"NaN", "a1616ef97e00", "", "NaN"},
		{"infinity", "a16169fb7ff0000000000000", "", "NaN and infinity"},
		{"int key", "a10101", "", "keys must be text"},
		{"truncated", "a2616101", "", "malformed CBOR"},
		{"trailing", "a0a0", "", "malformed CBOR"},
		{"bad UTF-8", "a16161 61ff", "", "malformed CBOR"},
		{"duplicate key", "a2616101616102", "", "duplicate key"},
		{"duplicate key, one chunked", "bf7f6161ff016161 02ff", "", "duplicate key"},
		{"duplicate ninth key", "a9616101616201616301616401616501616601616701616801616102", "", "duplicate key"},
		{"nine keys", "a9616101616201616301616401616501616601616701616801616901", `{"a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"i":1}`, ""},
		{"same key in two maps", "a26161a1616101616201", `{"a":{"a":1},"b":1}`, ""},
		{"empty key", "a16001", "", "empty key"},
		{"NUL", "a161616100", "", "NUL"},
		{"depth 6 ok", "a1616181818181a0", `{"a":[[[[{}]]]]}`, ""},
		{"depth 7", "a161618181818181a0", "", "nested deeper than 6"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := hex.DecodeString(strings.ReplaceAll(c.hex, " ", ""))
			if err != nil {
				t.Fatal(err)
			}
			got, err := CBORToJSON(nil, b, 6)
			if _, cerr := CheckCBOR(nil, b, 6); fmt.Sprint(cerr) != fmt.Sprint(err) {
				t.Errorf("CheckCBOR says %v, CBORToJSON %v", cerr, err)
			}
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %s, %v; want an error containing %q", got, err, c.err)
				}
				return
			}
			if err != nil || string(got) != c.want {
				t.Fatalf("got %s, %v; want %s", got, err, c.want)
			}
		})
	}
}

// TestCBORSmallerThanJSON measures the size target, a CBOR record of a reading at least
// 30 % smaller than the same reading as JSON (the payload; the CoAP header is the same), for
// every reading in the table, and asserts which readings meet it and which do not. The device
// encodes as a constrained device does: floats at the shortest width that holds them exactly
// (fxamacker's ShortestFloat16), SenML CBOR with its integer labels (RFC 8428 §6); JSON as
// encoding/json writes it (a float's shortest decimal). A value such as 3.7 or 21.37 is exact
// only as a double: 9 bytes in CBOR against 3 or 5 characters in JSON, which is why readings
// made mostly of such values cannot meet the target (21.37 alone is larger in CBOR); SenML's
// integer labels save 3 or more bytes per field, which carries a pack of doubles to the target
// only when it has enough fields per value (the series of three, not the pair).
func TestCBORSmallerThanJSON(t *testing.T) {
	em, err := cbor.EncOptions{ShortestFloat: cbor.ShortestFloat16, Sort: cbor.SortCanonical}.EncMode()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		reading any // a map[string]any (JSON and CBOR maps), or a SenML pack in JSON labels
		senml   bool
		meets   bool
	}{
		{map[string]any{"temp": 21.5}, false, true},
		{map[string]any{"hum": 48, "temp": 21.5, "ts": 1733457000}, false, true},
		{map[string]any{"door": true, "count": 12345}, false, true},
		{map[string]any{"temp": 21.5, "seq": 1000}, false, true},
		{map[string]any{"temp": 21.5, "seq": 123456}, false, true},                   // a 4-byte integer: 31 %
		{map[string]any{"bat": float32(3.7), "hum": 48, "temp": 21.5}, false, false}, // a single
		{map[string]any{"bat": 3.7, "hum": 48, "temp": 21.5}, false, false},          // a double
		{map[string]any{"temp": 21.37}, false, false},                                // CBOR larger
		{[]map[string]any{{"n": "temp", "u": "Cel", "v": 21.5}}, true, true},
		{[]map[string]any{{"bn": "dev1/", "n": "bat", "v": 3.7}, {"n": "temp", "v": 21.37}}, true, false}, // 28 %
		{[]map[string]any{{"bt": 1733457000, "n": "temp", "v": 21.37}, {"t": 60, "n": "temp", "v": 21.41}, {"t": 120, "n": "temp", "v": 21.45}}, true, true},
	} {
		var cb []byte
		if c.senml {
			var pack []map[string]any
			b, _ := json.Marshal(c.reading)
			_ = json.Unmarshal(b, &pack)
			cb, err = em.Marshal(senmlCBORLabels(pack))
		} else {
			cb, err = em.Marshal(c.reading)
		}
		if err != nil {
			t.Fatal(err)
		}
		js, _ := json.Marshal(c.reading)
		saved := 1 - float64(len(cb))/float64(len(js))
		t.Logf("JSON %3d bytes, CBOR %3d bytes (%3.0f %% smaller): %s", len(js), len(cb), 100*saved, js)
		if (saved >= 0.3) != c.meets {
			t.Errorf("%s: CBOR %d bytes, JSON %d (%.0f %% smaller): want the target met %v", js, len(cb), len(js), 100*saved, c.meets)
		}
		cf, jcf := uint16(FormatCBOR), uint16(FormatJSON)
		if c.senml {
			cf, jcf = FormatSenMLCBOR, FormatSenMLJSON
		}
		back, err := ToJSON(nil, cf, cb, 6, now)
		fromJSON, err2 := ToJSON(nil, jcf, js, 6, now)
		var a, b any
		if err != nil || err2 != nil || json.Unmarshal(back, &a) != nil || json.Unmarshal(fromJSON, &b) != nil || !approxEqual(b, a) {
			t.Errorf("CBOR reads back as %s, %v; want %s (%v)", back, err, fromJSON, err2)
		}
	}
}

// FuzzCBORToJSON: whatever the bytes, CBORToJSON does not panic, and what it accepts is
// well-formed for fxamacker/cbor (the walk checks it alone) and valid JSON that fxamacker/cbor
// also decodes, to the same value.
func FuzzCBORToJSON(f *testing.F) {
	for _, s := range []string{"a0", "a16174f94d60", "bf61619f0102ffff", "a1616182a161780180", "a16174c11a5f000000", "a10101", "a2616101"} {
		b, _ := hex.DecodeString(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		js, err := CBORToJSON(nil, b, 6)
		if _, cerr := CheckCBOR(nil, b, 6); fmt.Sprint(cerr) != fmt.Sprint(err) {
			t.Fatalf("%x: CheckCBOR says %v, CBORToJSON %v", b, cerr, err)
		}
		if err != nil {
			return
		}
		if err := cborWellformed.Wellformed(b); err != nil {
			t.Fatalf("%x converts to %s, but fxamacker/cbor finds it malformed: %v", b, js, err)
		}
		var fromJSON any
		if err := json.Unmarshal(js, &fromJSON); err != nil {
			t.Fatalf("%x gives invalid JSON %s: %v", b, js, err)
		}
		var fromCBOR any
		dm, _ := cbor.DecOptions{DefaultMapType: reflect.TypeFor[map[string]any]()}.DecMode()
		if err := dm.Unmarshal(b, &fromCBOR); err != nil {
			return // e.g. a duplicate key, which the JSON rules refuse after
		}
		if !approxEqual(fromJSON, fromCBOR) {
			t.Fatalf("%x: JSON %s, fxamacker/cbor %#v", b, js, fromCBOR)
		}
	})
}

// approxEqual compares a value decoded from JSON with one decoded from CBOR: numbers as
// float64, or as float32 for a value that is one (a CBOR half or single is written at single
// precision).
func approxEqual(j, c any) bool {
	switch j := j.(type) {
	case map[string]any:
		c, ok := c.(map[string]any)
		if !ok || len(c) != len(j) {
			return false
		}
		for k, v := range j {
			if !approxEqual(v, c[k]) {
				return false
			}
		}
		return true
	case []any:
		c, ok := c.([]any)
		if !ok || len(c) != len(j) {
			return false
		}
		for i := range j {
			if !approxEqual(j[i], c[i]) {
				return false
			}
		}
		return true
	case float64:
		var f float64
		switch c := c.(type) {
		case uint64:
			f = float64(c)
		case int64:
			f = float64(c)
		case float64:
			f = c
		case big.Int: // a negative integer beyond int64
			f, _ = c.Float64()
		default:
			return false
		}
		// A half or single float is written at single precision: the JSON reads back as it.
		return j == f || float64(float32(f)) == f && float32(j) == float32(f)
	}
	return reflect.DeepEqual(j, c)
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// BenchmarkCBORToJSON converts the ingest benchmark's reading; the wellformed sub-benchmark is
// the fxamacker/cbor check alone, for how much of it that is.
func BenchmarkCBORToJSON(b *testing.B) {
	p := []byte("\xa3\x64temp\xf9\x4d\x60\x63hum\x18\x28\x63pad\x78\x1axxxxxxxxxxxxxxxxxxxxxxxxxx")
	buf := make([]byte, 0, 256)
	b.Run("convert", func(b *testing.B) {
		for b.Loop() {
			if _, err := CBORToJSON(buf[:0], p, 6); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("wellformed", func(b *testing.B) {
		for b.Loop() {
			if err := cborWellformed.Wellformed(p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzAppendJSONNumber: the integer shortcut writes what strconv.AppendFloat writes, for doubles
// and singles (a single above 2^24 such as 123456792 is written 123456790, its shortest form).
func FuzzAppendJSONNumber(f *testing.F) {
	for _, v := range []float64{0, 1, -1, 21.3, 3.07, -0.5, 0.000001, 1e-7, 123456789.12345, 1 << 24, 1<<24 + 2, 123456792, 0.1 + 0.2, 1e15 - 0.5} {
		f.Add(math.Float64bits(v))
	}
	f.Fuzz(func(t *testing.T, u uint64) {
		v := math.Float64frombits(u)
		if !finite(v) {
			return
		}
		for _, c := range []struct {
			v    float64
			bits int
		}{{v, 64}, {float64(float32(v)), 32}, {math.Round(v*100) / 100, 64}, {float64(float32(math.Round(v*100) / 100)), 32}} {
			if !finite(c.v) {
				continue
			}
			want := strconv.FormatFloat(c.v, 'f', -1, c.bits)
			if a := math.Abs(c.v); c.v != 0 && (c.bits == 64 && (a < 1e-6 || a >= 1e21) || c.bits == 32 && (float32(a) < 1e-6 || float32(a) >= 1e21)) {
				continue // exponent form: AppendFloat itself
			}
			if got := string(AppendJSONNumber(nil, c.v, c.bits)); got != want {
				t.Fatalf("%v (%d bits): %s, want %s", c.v, c.bits, got, want)
			}
		}
	})
}

// TestAppendJSONNumberIntegers: the integer shortcut writes what strconv.AppendFloat writes, at
// the edges (negative zero, 1e15) and for random integral values.
func TestAppendJSONNumberIntegers(t *testing.T) {
	fs := []float64{0, math.Copysign(0, -1), 1, -1, 40, 1e15 - 1, -(1e15 - 1), 1e15, 1e16, 123456789012345, 0.5, -21.5}
	for i := range 2000 {
		fs = append(fs, float64(int64(i*7919)*int64(i*104729)%2e15-1e15))
	}
	for _, f := range fs {
		got := string(AppendJSONNumber(nil, f, 64))
		want := strconv.FormatFloat(f, 'f', -1, 64)
		if math.Abs(f) >= 1e21 {
			continue
		}
		if got != want {
			t.Errorf("%v: %s, want %s", f, got, want)
		}
	}
}
