package record

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/coapgw/coapgw/internal/jsonscan"
)

const now = int64(1_800_000_000) * 1e9 // the time the gateway received the pack

func TestParseSenML(t *testing.T) {
	cases := []struct {
		name, pack string // SenML JSON
		want       string // readings as name|unit|seconds from now|value, or "error: substring"
		json       string // the JSON form
	}{
		{"RFC 8428 §5.1.2: base name, relative times",
			`[{"bn":"urn:dev:ow:10e2073a01080063/","u":"Cel","t":-20,"n":"temp","v":23.1},{"n":"temp","t":-10,"v":23.5,"u":"Cel"},{"n":"temp","v":23.6,"u":"Cel"}]`,
			"urn:dev:ow:10e2073a01080063/temp|Cel|-20|23.1 urn:dev:ow:10e2073a01080063/temp|Cel|-10|23.5 urn:dev:ow:10e2073a01080063/temp|Cel|0|23.6",
			`{"urn:dev:ow:10e2073a01080063/temp":23.6}`},
		{"absolute base time, base unit, kinds of value",
			`[{"bn":"d/","bt":1799999400,"bu":"%RH","n":"h","v":40},{"n":"h","t":60,"v":41},{"n":"ok","vb":true},{"n":"s","vs":"a\"b"},{"n":"raw","vd":"AQI"}]`,
			`d/h|%RH|-600|40 d/h|%RH|-540|41 d/ok|%RH|-600|true d/s|%RH|-600|"a\"b" d/raw|%RH|-600|"AQI"`,
			`{"d/h":41,"d/ok":true,"d/s":"a\"b","d/raw":"AQI"}`},
		{"base value and sum", `[{"bn":"m/","bv":100,"bs":5,"n":"e","v":1.5},{"n":"tot","s":2}]`,
			"m/e||0|101.5 m/tot||0|7", `{"m/e":101.5,"m/tot":7}`},
		{"latest by time, not by order", `[{"n":"a","t":-1,"v":2},{"n":"a","t":-5,"v":1}]`,
			"a||-1|2 a||-5|1", `{"a":2}`},
		{"future within tolerance", `[{"n":"a","bt":1800000300,"v":1}]`, "a||300|1", `{"a":1}`},
		{"a year old: accepted (history's retention drops it)", `[{"n":"a","bt":1768464000,"v":1}]`, "a||-31536000|1", `{"a":1}`},
		{"future beyond tolerance", `[{"n":"a","bt":1800000601,"v":1}]`, "error: in the future", ""},
		{"no value", `[{"n":"a"}]`, "error: has no value", ""},
		{"bad name", `[{"n":"-a","v":1}]`, "error: bad name", ""},
		{"empty name", `[{"v":1}]`, "error: bad name", ""},
		{"must understand", `[{"n":"a","v":1,"x_":2}]`, "error: must-understand", ""},
		{"version 11", `[{"bver":11,"n":"a","v":1}]`, "error: version 11", ""},
		{"unknown fields skipped, escapes, whitespace", ` [ {"x":{"a":[1,{"b":null}]},"n":"a\u0062","ut":5,"v":1} ] `, "ab||0|1", `{"ab":1}`},
		{"vb not a boolean", `[{"n":"a","vb":1}]`, "error: invalid SenML", ""},
		{"trailing data", `[{"n":"a","v":1}] x`, "error: invalid", ""},
		{"NUL in a name", `[{"n":"a\u0000","v":1}]`, "error: ", ""},
		{"empty pack", `[]`, "error: no records", ""},
		{"not a pack", `{"n":"a","v":1}`, "error: invalid SenML JSON", ""},
		{"string v", `[{"n":"a","v":"1"}]`, "error: invalid SenML", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var p []map[string]any
			_ = jsonUnmarshal(c.pack, &p)
			cb, _ := cbor.Marshal(senmlCBORLabels(p))
			for _, f := range []struct {
				cf uint16
				b  []byte
			}{{FormatSenMLJSON, []byte(c.pack)}, {FormatSenMLCBOR, cb}} {
				if f.cf == FormatSenMLCBOR && (p == nil || strings.Contains(c.name, "must understand")) {
					continue // no CBOR spelling
				}
				rs, err := ParseSenML(nil, f.cf, f.b, now)
				if want, ok := strings.CutPrefix(c.want, "error: "); ok {
					if err == nil || !strings.Contains(err.Error(), want) {
						t.Fatalf("cf %d: %v, want an error containing %q", f.cf, err, want)
					}
					continue
				}
				if err != nil {
					t.Fatalf("cf %d: %v", f.cf, err)
				}
				var got []string
				for _, r := range rs {
					got = append(got, fmt.Sprintf("%s|%s|%d|%s", r.Name, r.Unit, (r.Time-now)/1e9, r.Value))
				}
				if strings.Join(got, " ") != c.want {
					t.Errorf("cf %d: readings\n%s\nwant\n%s", f.cf, strings.Join(got, " "), c.want)
				}
				if js := SenMLToJSON(nil, rs); string(js) != c.json {
					t.Errorf("cf %d: JSON form %s, want %s", f.cf, js, c.json)
				}
			}
		})
	}
}

// senmlCBORLabels turns a SenML JSON pack into its SenML CBOR spelling (RFC 8428 §6).
func senmlCBORLabels(p []map[string]any) []map[any]any {
	labels := map[string]int{"bver": -1, "bn": -2, "bt": -3, "bu": -4, "bv": -5, "bs": -6,
		"n": 0, "u": 1, "v": 2, "vs": 3, "vb": 4, "s": 5, "t": 6, "ut": 7, "vd": 8}
	out := []map[any]any{} // [] is an empty array, not null
	for _, r := range p {
		m := map[any]any{}
		for k, v := range r {
			l, ok := labels[k]
			if !ok {
				m[k] = v
				continue
			}
			if k == "vd" {
				v = []byte{1, 2} // "AQI" in base64url
			}
			m[l] = v
		}
		out = append(out, m)
	}
	return out
}

func TestSenMLCBORRefusals(t *testing.T) {
	for name, h := range map[string]string{
		"tag":           "81a2006161c11a00000000",
		"NaN value":     "81a200616102f97e00",
		"duplicate key": "81a3006161020100616262",
		"not an array":  "a200616102 01",
	} {
		b, _ := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
		if _, err := ParseSenML(nil, FormatSenMLCBOR, b, now); err == nil || !strings.Contains(err.Error(), "SenML CBOR") {
			t.Errorf("%s: %v, want an invalid SenML CBOR error", name, err)
		}
	}
}

// FuzzSenML: whatever the bytes, as SenML JSON or CBOR, ParseSenML does not panic, and what it
// accepts has valid names, times no later than MaxFuture, and a JSON form CBORToJSON-style
// consumers can read.
func FuzzSenML(f *testing.F) {
	f.Add(true, []byte(`[{"bn":"d/","bt":1799999400,"bu":"%RH","n":"h","v":40},{"n":"h","t":60,"v":41}]`))
	f.Add(true, []byte(`[{"n":"a","vs":"x"},{"n":"b","vb":false},{"n":"c","s":1}]`))
	cb, _ := cbor.Marshal([]map[int]any{{-2: "d/", 0: "t", 2: 21.5, 6: -10}, {0: "u", 8: []byte{1}}})
	f.Add(false, cb)
	f.Fuzz(func(t *testing.T, isJSON bool, b []byte) {
		cf := uint16(FormatSenMLCBOR)
		if isJSON {
			cf = FormatSenMLJSON
		}
		rs, err := ParseSenML(nil, cf, b, now)
		if err != nil {
			return
		}
		for _, r := range rs {
			if !validSenMLName([]byte(r.Name), nil) || r.Time > now+MaxFuture || len(r.Value) == 0 {
				t.Fatalf("accepted %+v", r)
			}
		}
		var v map[string]any
		if err := jsonUnmarshal(string(SenMLToJSON(nil, rs)), &v); err != nil {
			t.Fatalf("JSON form %s: %v", SenMLToJSON(nil, rs), err)
		}
	})
}

// FuzzShortestNumber: a number's text that shortestNumber lets SenML JSON copy is exactly what
// AppendJSONNumber writes for its value, so the JSON form is the same either way.
func FuzzShortestNumber(f *testing.F) {
	for _, s := range []string{"0", "-0", "21.5", "21.50", "100", "-3.07", "0.000001", "0.0000001",
		"123456789012345", "1234567890123456", "0.1", "1e5", "123456.789012345", "9007199254740993", "0.30000000000000004"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p := jsonscan.Scanner{B: []byte(s)}
		if len(s) == 0 || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) || p.Num() != nil || p.I != len(s) {
			return // not one JSON number within float64's range
		}
		if !shortestNumber([]byte(s)) {
			return
		}
		v, err := strconv.ParseFloat(s, 64)
		if got := string(AppendJSONNumber(nil, v, 64)); err != nil || got != s {
			t.Fatalf("%s: copied, but its value is written %s (%v)", s, got, err)
		}
	})
}

func TestShortestNumber(t *testing.T) {
	for s, want := range map[string]bool{"0": true, "-0": false, "21.5": true, "21.50": false, "100": true,
		"-3.07": true, "0.000001": true, "0.0000001": false, "123456789012345": true,
		"1234567890123456": false, "1e5": false, "0.5": true} {
		if got := shortestNumber([]byte(s)); got != want {
			t.Errorf("%s: %v, want %v", s, got, want)
		}
	}
}
