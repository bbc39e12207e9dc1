package awsiot

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/coapgw/coapgw/internal/processor"
)

type step struct {
	ts      int64 // nanoseconds
	payload string
}

func build(t testing.TB, steps ...step) []*processor.Doc {
	t.Helper()
	d := processor.NewDoc()
	docs := []*processor.Doc{d.Clone()}
	for _, s := range steps {
		p, err := processor.DecodeJSON([]byte(s.payload), s.ts)
		if err != nil {
			t.Fatalf("decode %s: %v", s.payload, err)
		}
		d.Merge(p)
		docs = append(docs, d.Clone())
	}
	return docs
}

var treeCases = []struct {
	name  string
	steps []step
}{
	{"flat", []step{{1e9, `{"temp":20,"hum":40}`}, {2e9 + 7, `{"temp":21}`}}},
	{"nested", []step{{1, `{"env":{"t":1,"h":{"a":2,"b":[1,[2]]}},"x":"s"}`}, {5, `{"env":{"h":{"b":3}}}`}}},
	{"leaf deletion", []step{{1, `{"env":{"hum":1,"t":2},"x":1}`}, {2, `{"env":{"hum":null}}`}}},
	{"object deletion", []step{{1, `{"env":{"hum":1,"t":2},"x":1}`}, {2, `{"env":null}`}}},
	{"object deleted then rewritten", []step{{1, `{"env":{"a":1}}`}, {5, `{"env":null}`}, {6, `{"env":{"b":2}}`}}},
	{"floor with newer leaf", []step{{2, `{"a":{"x":1}}`}, {6, `{"a":{"y":3}}`}, {4, `{"a":null}`}}},
	{"only deletions", []step{{3, `{"a":null,"b":{"c":null}}`}}},
	{"value replaced by object", []step{{1, `{"a":5}`}, {2, `{"a":{"b":1}}`}}},
	{"object replaced by value", []step{{1, `{"a":{"b":1}}`}, {2, `{"a":5}`}}},
	{"escaped keys and strings", []step{{1, `{"q\"k":"caf\u00e9 \"x\"","t\tab":[{"z":null}]}`}}},
	{"old times", []step{{-5e18, `{"a":1}`}, {4e18, `{"b":2}`}}},
}

// sameStamps reports where the stamps document st differs from d's tree in shape, kinds, times,
// deletions or floors ("" if nowhere).
func sameStamps(st, d processor.Node, path string) string {
	if st.Kind() != d.Kind() || st.Time() != d.Time() || st.Len() != d.Len() {
		return fmt.Sprintf("%s: kind %d time %d members %d, want %d %d %d", path, st.Kind(), st.Time(), st.Len(), d.Kind(), d.Time(), d.Len())
	}
	for i := range d.Len() {
		sm, dm := st.Member(i), d.Member(i)
		if sm.Key() != dm.Key() {
			return fmt.Sprintf("%s: key %q, want %q", path, sm.Key(), dm.Key())
		}
		if where := sameStamps(sm, dm, path+"."+dm.Key()); where != "" {
			return where
		}
	}
	return ""
}

// TestStampsRoundTrip: the stamps keep the document's shape and every time, deletion and floor.
func TestStampsRoundTrip(t *testing.T) {
	for _, tc := range treeCases {
		t.Run(tc.name, func(t *testing.T) {
			for _, d := range build(t, tc.steps...) {
				st, err := decodeStamps(encodeStamps(d))
				if err != nil {
					t.Fatal(err)
				}
				if where := sameStamps(st.Root(), d.Root(), "$"); where != "" {
					t.Fatalf("stamps differ at %s", where)
				}
			}
		})
	}
}

// shadowOf is what the shadow holds for d: its state and the stamps.
func shadowOf(t testing.TB, d *processor.Doc) (map[string]json.RawMessage, *processor.Doc) {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(d.AppendState(nil), &fields); err != nil {
		t.Fatal(err)
	}
	st, err := decodeStamps(encodeStamps(d))
	if err != nil {
		t.Fatal(err)
	}
	return fields, st
}

// TestStampsRebuildExact: state + stamps rebuild exactly the document, deletions and floors
// included, so a worker with an empty cache decides every later record as the writer would.
func TestStampsRebuildExact(t *testing.T) {
	for _, tc := range treeCases {
		t.Run(tc.name, func(t *testing.T) {
			for _, d := range build(t, tc.steps...) {
				fields, st := shadowOf(t, d)
				got, err := rebuild(st, fields, 999)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.AppendBinary(nil), d.AppendBinary(nil)) {
					t.Fatalf("rebuilt %s, want %s", got.AppendState(nil), d.AppendState(nil))
				}
			}
		})
	}
}

// TestRebuildWithoutStamps: properties the stamps do not explain count as written at the
// shadow's last update: older records leave them, newer ones replace them.
func TestRebuildWithoutStamps(t *testing.T) {
	fields := map[string]json.RawMessage{"temp": json.RawMessage(`20`), "env": json.RawMessage(`{"h": [1, 2]}`)}
	d, err := rebuild(nil, fields, 100)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(d.AppendState(nil)); got != `{"env":{"h":[1,2]},"temp":20}` {
		t.Fatalf("state %s", got)
	}
	older, _ := processor.DecodeJSON([]byte(`{"temp":1,"new":1}`), 99)
	newer, _ := processor.DecodeJSON([]byte(`{"env":{"h":0}}`), 101)
	d.Merge(older)
	d.Merge(newer)
	if got := string(d.AppendState(nil)); got != `{"env":{"h":0},"new":1,"temp":20}` {
		t.Fatalf("after merges %s", got)
	}
	// A value coapgw wrote that someone else deleted is a deletion at the shadow's time.
	d0 := build(t, step{50, `{"a":1,"b":2}`})[1]
	_, st := shadowOf(t, d0)
	d, err = rebuild(st, map[string]json.RawMessage{"b": json.RawMessage(`2`)}, 100)
	if err != nil {
		t.Fatal(err)
	}
	late, _ := processor.DecodeJSON([]byte(`{"a":7}`), 80)
	if d.Merge(late) {
		t.Fatalf("a record older than the foreign deletion brought the property back: %s", d.AppendState(nil))
	}
}

func TestDecodeStampsRejectsGarbage(t *testing.T) {
	for _, s := range []string{"", "!!", "AA", encodeStamps(processor.NewDoc()) + "AA"} {
		if _, err := decodeStamps(s); err == nil && s != "" {
			t.Errorf("decodeStamps(%q) accepted", s)
		}
	}
	// Hand-made stamps (base 10): keys must be strictly ascending, kinds known, nesting at most
	// 64 levels below the root.
	nested := func(levels int, leaf []byte) []byte {
		b := []byte{20} // varint 10
		for range levels {
			b = append(b, stampObject, 0, 1, 1, 'k')
		}
		b = append(b, stampObject, 0, 1, 1, 'k')
		return append(b, leaf...)
	}
	for name, tc := range map[string]struct {
		b  []byte
		ok bool
	}{
		"value":         {[]byte{20, stampObject, 0, 1, 1, 'a', stampValue, 3}, true},
		"ascending":     {[]byte{20, stampObject, 2, 2, 1, 'a', stampValue, 3, 1, 'b', stampDeleted, 0}, true},
		"duplicate key": {[]byte{20, stampObject, 0, 2, 1, 'a', stampValue, 3, 1, 'a', stampDeleted, 0}, false},
		"descending":    {[]byte{20, stampObject, 0, 2, 1, 'b', stampValue, 3, 1, 'a', stampDeleted, 0}, false},
		"unknown kind":  {[]byte{20, stampObject, 0, 1, 1, 'a', 3, 3}, false},
		"root value":    {[]byte{20, stampValue, 3}, false},
		"truncated":     {[]byte{20, stampObject, 0, 2, 1, 'a', stampValue, 3}, false},
		"64 levels":     {nested(63, []byte{stampValue, 0}), true},
		"65 levels":     {nested(64, []byte{stampValue, 0}), false},
	} {
		st, err := decodeStamps(base64.RawURLEncoding.EncodeToString(tc.b))
		if (err == nil) != tc.ok {
			t.Errorf("%s: decodeStamps: %v", name, err)
		}
		if name == "ascending" && err == nil {
			a, _ := st.Root().Find("a")
			if f := st.Root().Time(); f != 9 || a.Kind() != processor.ValueNode || a.Time() != 7 {
				t.Errorf("ascending: floor %d, a %d at %d", f, a.Kind(), a.Time())
			}
		}
	}
}

// applyPatch merges a patch (the members appendPatch writes) into a state the way AWS does.
func applyPatch(t testing.TB, state string, patch []byte) string {
	t.Helper()
	var st, p map[string]any
	if err := json.Unmarshal([]byte(state), &st); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(append(append([]byte{'{'}, patch...), '}'), &p); err != nil {
		t.Fatalf("patch %s: %v", patch, err)
	}
	mergePatch(st, p)
	b, _ := json.Marshal(st)
	return string(b)
}

func canon(t testing.TB, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// TestPatch: the merge patch turns the old state into the new one and holds only what changed.
func TestPatch(t *testing.T) {
	for _, tc := range []struct {
		old, cur []step
		want     string
	}{
		{[]step{{1, `{"a":1,"b":2}`}}, []step{{1, `{"a":1,"b":2}`}, {2, `{"a":3}`}}, `"a":3`},
		{[]step{{1, `{"a":1,"b":{"c":1,"d":2}}`}}, []step{{1, `{"a":1,"b":{"c":1,"d":2}}`}, {2, `{"b":{"d":null}}`}}, `"b":{"d":null}`},
		{[]step{{1, `{"a":1,"b":{"c":1}}`}}, []step{{1, `{"a":1,"b":{"c":1}}`}, {2, `{"b":null}`}}, `"b":null`},
		{[]step{{1, `{"a":1}`}}, []step{{1, `{"a":1}`}, {2, `{"a":1}`}}, ``},
		{[]step{{1, `{"a":{"x":1},"b":{"y":1}}`}}, []step{{1, `{"a":{"x":1},"b":{"y":1}}`}, {2, `{"a":{"x":1},"b":{"y":2}}`}}, `"b":{"y":2}`},
		{[]step{{1, `{"a":5}`}}, []step{{1, `{"a":5}`}, {2, `{"a":{"b":1}}`}}, `"a":{"b":1}`},
		{nil, []step{{2, `{"a":{"b":[1,2]}}`}}, `"a":{"b":[1,2]}`},
	} {
		old, cur := build(t, tc.old...), build(t, tc.cur...)
		got, wrote := appendPatch(nil, old[len(old)-1], cur[len(cur)-1], true)
		if string(got) != tc.want || wrote != (tc.want != "") {
			t.Errorf("patch %q (wrote %v), want %q", got, wrote, tc.want)
		}
	}
}

// TestTreeRandom checks the three properties on random histories: round trip, exact rebuild
// from state + stamps, and merge patches that carry the shadow from one state to the next.
func TestTreeRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := []string{"a", "b", "c"}
	var value func(depth int) string
	value = func(depth int) string {
		switch n := rng.IntN(10); {
		case n < 2:
			return "null"
		case n < 4 && depth < 3:
			var parts []string
			for _, k := range keys[:1+rng.IntN(len(keys))] {
				parts = append(parts, fmt.Sprintf("%q:%s", k, value(depth+1)))
			}
			return "{" + strings.Join(parts, ",") + "}"
		case n < 5:
			return fmt.Sprintf("[%d,{\"z\":%d}]", rng.IntN(3), rng.IntN(3))
		default:
			return fmt.Sprint(rng.IntN(4))
		}
	}
	for iter := range 300 {
		var steps []step
		for range 1 + rng.IntN(8) {
			steps = append(steps, step{int64(1 + rng.IntN(6)), value(0)})
		}
		// Payloads must be objects.
		for i := range steps {
			if steps[i].payload[0] != '{' {
				steps[i].payload = `{"a":` + steps[i].payload + `}`
			}
		}
		docs := build(t, steps...)
		for k, d := range docs {
			fields, st := shadowOf(t, d)
			got, err := rebuild(st, fields, 1)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.AppendBinary(nil), d.AppendBinary(nil)) {
				t.Fatalf("iter %d %v: rebuilt %s, want %s", iter, steps[:k], got.AppendState(nil), d.AppendState(nil))
			}
			if k == 0 {
				continue
			}
			patch, _ := appendPatch(nil, docs[k-1], d, true)
			if got, want := applyPatch(t, string(docs[k-1].AppendState(nil)), patch), canon(t, string(d.AppendState(nil))); got != want {
				t.Fatalf("iter %d %v: patch %s gives %s, want %s", iter, steps[:k+1], patch, got, want)
			}
		}
	}
}

// benchDocs is a typical thing's document before and after a batch.
func benchDocs(b *testing.B) (old, cur *processor.Doc) {
	docs := build(b,
		step{1e18, `{"temp":21.5,"hum":40,"env":{"co2":400,"voc":12,"pm":{"p1":1,"p25":2,"p10":3}},"fw":"1.2.3","pos":[1.5,2.5]}`},
		step{1e18 + 5, `{"env":{"pm":null},"bat":3.7}`},
		step{1e18 + 9, `{"temp":22,"env":{"voc":13}}`},
	)
	return docs[2], docs[3]
}

// BenchmarkTreeUpdate is what the sink does with documents per shadow update: the patch and the
// stamps of the new state.
func BenchmarkTreeUpdate(b *testing.B) {
	old, cur := benchDocs(b)
	b.ReportAllocs()
	for b.Loop() {
		p, _ := appendPatch(nil, old, cur, true)
		if len(p) == 0 || encodeStamps(cur) == "" {
			b.Fatal("empty")
		}
	}
}

// BenchmarkTreeRebuild is what the sink does on a cache miss: the document from the shadow.
func BenchmarkTreeRebuild(b *testing.B) {
	_, cur := benchDocs(b)
	fields, _ := shadowOf(b, cur)
	stamps := encodeStamps(cur)
	b.ReportAllocs()
	for b.Loop() {
		st, err := decodeStamps(stamps)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := rebuild(st, fields, 1); err != nil {
			b.Fatal(err)
		}
	}
}
