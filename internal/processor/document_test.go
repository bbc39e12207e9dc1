package processor

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coapgw/coapgw/internal/jsonscan"
)

// step is one record: its received_at (here in seconds, so metadata shows it) and payload.
type step struct {
	ts      int64
	payload string
}

func apply(t *testing.T, d *Doc, steps ...step) []bool {
	t.Helper()
	var changed []bool
	for _, s := range steps {
		p, err := DecodeJSON([]byte(s.payload), s.ts*1e9)
		if err != nil {
			t.Fatalf("decode %s: %v", s.payload, err)
		}
		changed = append(changed, d.Merge(p))
	}
	return changed
}

func TestMergeRules(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []step
		want  string
	}{
		{"merge", []step{{1, `{"temp":20,"hum":40}`}, {2, `{"temp":21}`}}, `{"hum":40,"temp":21}`},
		{"null deletes", []step{{1, `{"a":1,"b":2}`}, {2, `{"a":null}`}}, `{"b":2}`},
		{"nested null deletes a leaf", []step{{1, `{"env":{"hum":1,"t":2},"x":1}`}, {2, `{"env":{"hum":null}}`}}, `{"env":{"t":2},"x":1}`},
		{"nested null deletes an object", []step{{1, `{"env":{"hum":1,"t":2},"x":1}`}, {2, `{"env":null}`}}, `{"x":1}`},
		{"last leaf deleted removes the object", []step{{1, `{"env":{"hum":1}}`}, {2, `{"env":{"hum":null}}`}}, `{}`},
		{"older never overwrites newer", []step{{5, `{"temp":22}`}, {3, `{"temp":11}`}}, `{"temp":22}`},
		{"older sets a leaf newer did not touch", []step{{5, `{"temp":22}`}, {3, `{"temp":11,"hum":50}`}}, `{"hum":50,"temp":22}`},
		{"older cannot resurrect a deleted leaf", []step{{1, `{"hum":1}`}, {5, `{"hum":null}`}, {3, `{"hum":60}`}}, `{}`},
		{"older cannot write into a deleted object", []step{{1, `{"env":{"a":1}}`}, {5, `{"env":null}`}, {3, `{"env":{"b":2}}`}}, `{}`},
		{"newer writes into a deleted object", []step{{1, `{"env":{"a":1}}`}, {5, `{"env":null}`}, {6, `{"env":{"b":2}}`}}, `{"env":{"b":2}}`},
		{"older null does not delete newer", []step{{5, `{"a":{"x":1,"y":2}}`}, {6, `{"a":{"y":3}}`}, {5, `{"a":null}`}}, `{"a":{"y":3}}`},
		{"null on object keeps newer leaves only", []step{{2, `{"a":{"x":1}}`}, {6, `{"a":{"y":3}}`}, {4, `{"a":null}`}}, `{"a":{"y":3}}`},
		{"object replaces older value", []step{{1, `{"a":5}`}, {2, `{"a":{"b":1}}`}}, `{"a":{"b":1}}`},
		{"older object does not replace newer value", []step{{2, `{"a":5}`}, {1, `{"a":{"b":1}}`}}, `{"a":5}`},
		{"value replaces older object", []step{{1, `{"a":{"b":1}}`}, {2, `{"a":5}`}}, `{"a":5}`},
		{"arrays are replaced whole", []step{{1, `{"a":[1,2,3]}`}, {2, `{"a":[ 4 ]}`}}, `{"a":[4]}`},
		{"strings kept as sent", []step{{1, `{"s":"caf\u00e9 \"x\""}`}}, `{"s":"caf\u00e9 \"x\""}`},
		{"escaped keys", []step{{1, `{"a\u0062":1,"q\"":2}`}}, `{"ab":1,"q\"":2}`},
		{"empty object is a no-op", []step{{1, `{"a":1}`}, {2, `{"b":{}}`}}, `{"a":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDoc()
			apply(t, d, tc.steps...)
			if got := string(d.AppendState(nil)); got != tc.want {
				t.Errorf("state %s, want %s", got, tc.want)
			}
			if got, want := d.Size(), len(d.AppendState(nil)); got != want {
				t.Errorf("Size %d, rendered %d bytes", got, want)
			}
			// Same result whatever the order the records are merged in, and merged one by one
			// or coalesced first.
			rev := NewDoc()
			for i := len(tc.steps) - 1; i >= 0; i-- {
				apply(t, rev, tc.steps[i])
			}
			if got := string(rev.AppendState(nil)); got != tc.want {
				t.Errorf("reverse order: state %s, want %s", got, tc.want)
			}
			acc := NewDoc()
			apply(t, acc, tc.steps...)
			co := NewDoc()
			co.Merge(acc)
			if got := string(co.AppendState(nil)); got != tc.want {
				t.Errorf("coalesced: state %s, want %s", got, tc.want)
			}
		})
	}
}

func TestMergeRedeliveryChangesNothing(t *testing.T) {
	d := NewDoc()
	steps := []step{{1, `{"a":1,"env":{"h":2}}`}, {2, `{"env":null,"b":[1]}`}, {3, `{"c":"x"}`}}
	apply(t, d, steps...)
	before := string(d.AppendBinary(nil))
	for i, ch := range apply(t, d, steps...) {
		if ch {
			t.Errorf("redelivered record %d reported a change", i)
		}
	}
	if after := string(d.AppendBinary(nil)); after != before {
		t.Error("redelivery changed the document")
	}
	// The same values at a new time are a change (metadata timestamps move).
	if ch := apply(t, d, step{4, `{"c":"x"}`}); !ch[0] {
		t.Error("same value at a newer time: no change reported")
	}
}

func TestMetadata(t *testing.T) {
	d := NewDoc()
	apply(t, d, step{100, `{"temp":1,"env":{"hum":2},"arr":[1,{"k":2},[3]]}`}, step{200, `{"temp":3}`})
	want := `{"arr":[{"timestamp":100},{"k":{"timestamp":100}},[{"timestamp":100}]],"env":{"hum":{"timestamp":100}},"temp":{"timestamp":200}}`
	if got := string(d.AppendMetadata(nil)); got != want {
		t.Errorf("metadata %s\nwant     %s", got, want)
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	d := NewDoc()
	apply(t, d, step{1, `{"a":1,"env":{"h":2,"x":"s"},"arr":[1,2]}`}, step{5, `{"env":null,"z":null}`}, step{6, `{"env":{"k":true}}`})
	var back Doc
	if err := back.UnmarshalBinary(d.AppendBinary(nil)); err != nil {
		t.Fatal(err)
	}
	if got, want := string(back.AppendState(nil)), string(d.AppendState(nil)); got != want {
		t.Errorf("state after round trip %s, want %s", got, want)
	}
	// The deletions survive: an older record still cannot bring env.h or z back.
	apply(t, &back, step{3, `{"env":{"h":9},"z":1}`})
	if got, want := string(back.AppendState(nil)), `{"a":1,"arr":[1,2],"env":{"k":true}}`; got != want {
		t.Errorf("after older record: %s, want %s", got, want)
	}
	for _, bad := range [][]byte{nil, {9}, {1}, {1, 0, 0, 5}, d.AppendBinary(nil)[:7]} {
		var x Doc
		if err := x.UnmarshalBinary(bad); err == nil {
			t.Errorf("UnmarshalBinary(%x) accepted", bad)
		}
	}
}

func TestDecodeJSONErrors(t *testing.T) {
	for _, tc := range []struct{ payload, want string }{
		{``, "must be a JSON object"},
		{`[1]`, "must be a JSON object"},
		{`"x"`, "must be a JSON object"},
		{`{"a":1`, "unexpected end"},
		{`{"a":1}x`, "trailing data"},
		{`{"a":01}`, "invalid JSON"},
		{`{a:1}`, "key must be a string"},
		{"{\"a\":\"\xff\"}", "invalid UTF-8"},
		{`{"a":"\x"}`, "bad escape"},
		{`{"1":{"2":{"3":{"4":{"5":{"6":{"7":1}}}}}}}`, "nested deeper than 6"},
		{`{"x":1,"1":{"2":{"3":{"4":{"5":{"6":[1]}}}}}}`, "nested deeper than 6"},
		{`{"a":[[[[[[1]]]]]]}`, "nested deeper than 6"},
	} {
		if _, err := DecodeJSON([]byte(tc.payload), 1); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DecodeJSON(%q) = %v, want an error with %q", tc.payload, err, tc.want)
		}
	}
	if _, err := DecodeJSON([]byte(`{"1":{"2":{"3":{"4":{"5":{"6":1}}}}},"a":[[[[[1]]]]]}`), 1); err != nil {
		t.Errorf("6 levels rejected: %v", err)
	}
}

func TestLimits(t *testing.T) {
	d := NewDoc()
	apply(t, d, step{1, `{"a":"` + strings.Repeat("x", MaxShadowBytes-10) + `"}`})
	if r := d.CheckLimits(); r != "" {
		t.Fatalf("%d bytes rejected: %s", d.Size(), r)
	}
	apply(t, d, step{2, `{"bb":1}`})
	if r := d.CheckLimits(); !strings.Contains(r, "over the 8192-byte limit") {
		t.Errorf("%d bytes: CheckLimits = %q", d.Size(), r)
	}
}

func TestNumbers(t *testing.T) {
	d := NewDoc()
	apply(t, d, step{1, `{"temp":21.5,"env":{"hum":40,"ok":true,"s":"1"},"arr":[1],"neg":-2e3}`})
	got := map[string]float64{}
	d.Numbers(func(p string, v float64) { got[p] = v })
	want := map[string]float64{"temp": 21.5, "env.hum": 40, "neg": -2000}
	if len(got) != len(want) {
		t.Fatalf("Numbers = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("Numbers[%s] = %v, want %v", k, got[k], v)
		}
	}
}

func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"b":{"c":[1,{"d":null}]}}`, `{"a":"\u00e9\n"}`, `{"a" : [ 1 , 2 ] }`,
		`{"1":{"2":{"3":{"4":{"5":{"6":1}}}}}}`, `{"a":1,"a":null}`, "{\"\xff\":1}", `[]`, `{"a":1e400}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeJSON(b, 7e9)
		if err != nil {
			// Valid JSON may break the depth limit or a shadow rule (jsonscan.RuleError:
			// numbers out of float64's range, NUL, unpaired surrogates), nothing else.
			var rule *jsonscan.RuleError
			if json.Valid(b) && utf8.Valid(b) && strings.HasPrefix(strings.TrimSpace(string(b)), "{") && !strings.Contains(err.Error(), "nested") && !errors.As(err, &rule) {
				t.Fatalf("valid JSON object rejected: %v", err)
			}
			return
		}
		st := d.AppendState(nil)
		if !json.Valid(st) {
			t.Fatalf("rendered state is not JSON: %s", st)
		}
		if len(st) != d.Size() {
			t.Fatalf("Size %d, rendered %d", d.Size(), len(st))
		}
		if !json.Valid(d.AppendMetadata(nil)) {
			t.Fatalf("metadata is not JSON")
		}
		var back Doc
		if err := back.UnmarshalBinary(d.AppendBinary(nil)); err != nil {
			t.Fatal(err)
		}
		if back.Merge(d) {
			t.Fatal("merging a document into its own copy changed it")
		}
		if !bytes.Equal(rebuilt(t, d.Root()).AppendBinary(nil), d.AppendBinary(nil)) {
			t.Fatal("the document rebuilt from its nodes differs")
		}
	})
}

// A corrupt array value (only a damaged stored document can hold one) still gives valid JSON
// metadata: the elements before the damage, and the array closed.
func TestArrayMetadataOfCorruptValue(t *testing.T) {
	for _, v := range []string{`[1,{"a":2},`, `[1,"x`, `[[1,2],[3`} {
		got := appendValueMetadata(nil, []byte(v), 7)
		if !json.Valid(got) {
			t.Errorf("metadata of %s: %s is not JSON", v, got)
		}
	}
	if got := string(appendValueMetadata(nil, []byte(`[1,{"a":2}]`), 7)); got != `[{"timestamp":7},{"a":{"timestamp":7}}]` {
		t.Errorf("metadata of a sound array: %s", got)
	}
}

// TestDecodeShadowRules: DecodeJSON refuses what the device API refuses as breaking a shadow
// rule, with a *jsonscan.RuleError: records stored before the device API checked them are set
// aside with the reason, in local and AWS mode alike.
func TestDecodeShadowRules(t *testing.T) {
	for doc, want := range map[string]string{
		`{"a":1,"a":2}`:            `duplicate key "a" at byte 0`,
		`{"x":{"b":1,"\u0062":2}}`: `duplicate key "b" at byte 5`,
		`{"":1}`:                   "empty key at byte 1",
		`{"a":1e400}`:              "number out of range at byte 5",
		`{"a":"\u0000"}`:           `NUL (\u0000) in string at byte 6`,
	} {
		_, err := DecodeJSON([]byte(doc), 1)
		var rule *jsonscan.RuleError
		if !errors.As(err, &rule) || err.Error() != want {
			t.Errorf("%s: %v, want the rule error %q", doc, err, want)
		}
	}
}
