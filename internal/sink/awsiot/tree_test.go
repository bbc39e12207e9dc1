package awsiot

import (
	"bytes"
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

// TestDocTreeRoundTrip: the tree read from a Doc's binary encoding gives the same Doc back.
func TestDocTreeRoundTrip(t *testing.T) {
	for _, tc := range treeCases {
		t.Run(tc.name, func(t *testing.T) {
			for _, d := range build(t, tc.steps...) {
				tr, err := openDoc(d)
				if err != nil {
					t.Fatal(err)
				}
				back, err := tr.doc()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(back.AppendBinary(nil), d.AppendBinary(nil)) {
					t.Fatalf("round trip changed the document")
				}
				if got, want := string(appendState(nil, tr)), string(d.AppendState(nil)); got != want {
					t.Fatalf("state %s, want %s", got, want)
				}
			}
		})
	}
}

// shadowOf is what the shadow holds for d: its state and the stamps.
func shadowOf(t testing.TB, d *processor.Doc) (map[string]json.RawMessage, *tree) {
	t.Helper()
	tr, err := openDoc(d)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(d.AppendState(nil), &fields); err != nil {
		t.Fatal(err)
	}
	st, err := decodeStamps(encodeStamps(tr))
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
				tr, err := rebuild(st, fields, 999)
				if err != nil {
					t.Fatal(err)
				}
				got, err := tr.doc()
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
	tr, err := rebuild(nil, fields, 100)
	if err != nil {
		t.Fatal(err)
	}
	d, err := tr.doc()
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
	tr, err = rebuild(st, map[string]json.RawMessage{"b": json.RawMessage(`2`)}, 100)
	if err != nil {
		t.Fatal(err)
	}
	d, _ = tr.doc()
	late, _ := processor.DecodeJSON([]byte(`{"a":7}`), 80)
	if d.Merge(late) {
		t.Fatalf("a record older than the foreign deletion brought the property back: %s", d.AppendState(nil))
	}
}

func TestDecodeStampsRejectsGarbage(t *testing.T) {
	for _, s := range []string{"", "!!", "AA", encodeStamps(&tree{kind: kindObject}) + "AA"} {
		if _, err := decodeStamps(s); err == nil && s != "" {
			t.Errorf("decodeStamps(%q) accepted", s)
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
		o, _ := openDoc(old[len(old)-1])
		c, _ := openDoc(cur[len(cur)-1])
		got, wrote := appendPatch(nil, o, c, true)
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
			tr, err := openDoc(d)
			if err != nil {
				t.Fatal(err)
			}
			fields, st := shadowOf(t, d)
			rb, err := rebuild(st, fields, 1)
			if err != nil {
				t.Fatal(err)
			}
			got, err := rb.doc()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.AppendBinary(nil), d.AppendBinary(nil)) {
				t.Fatalf("iter %d %v: rebuilt %s, want %s", iter, steps[:k], got.AppendState(nil), d.AppendState(nil))
			}
			if k == 0 {
				continue
			}
			prev, _ := openDoc(docs[k-1])
			patch, _ := appendPatch(nil, prev, tr, true)
			if got, want := applyPatch(t, string(docs[k-1].AppendState(nil)), patch), canon(t, string(d.AppendState(nil))); got != want {
				t.Fatalf("iter %d %v: patch %s gives %s, want %s", iter, steps[:k+1], patch, got, want)
			}
		}
	}
}

func TestValueDepth(t *testing.T) {
	for v, want := range map[string]uint8{`1`: 0, `"[x]"`: 0, `[1]`: 1, `[[1],{"a":"]"}]`: 2, `[{"a":[1]}]`: 3} {
		if got := valueDepth([]byte(v)); got != want {
			t.Errorf("valueDepth(%s) = %d, want %d", v, got, want)
		}
	}
	// The processor's own count agrees.
	d, err := processor.DecodeJSON([]byte(`{"x":[{"a":[1]}]}`), 1)
	if err != nil {
		t.Fatal(err)
	}
	tr, _ := openDoc(d)
	if got := tr.find("x").depth; got != 3 {
		t.Errorf("processor depth %d", got)
	}
}
