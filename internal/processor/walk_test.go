package processor

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// merged is the document the records (received_at in nanoseconds, payload) make, merged in order.
func merged(t *testing.T, records ...step) *Doc {
	t.Helper()
	d := NewDoc()
	for _, r := range records {
		p, err := DecodeJSON([]byte(r.payload), r.ts)
		if err != nil {
			t.Fatalf("decode %s: %v", r.payload, err)
		}
		d.Merge(p)
	}
	return d
}

// nodes lists n's tree, one line a node: path, kind, time, and a value's JSON.
func nodes(n Node, path string, out []string) []string {
	switch n.Kind() {
	case ObjectNode:
		out = append(out, fmt.Sprintf("%s object floor=%d", path, n.Time()))
		for i := range n.Len() {
			m := n.Member(i)
			out = nodes(m, path+"."+m.Key(), out)
		}
	case ValueNode:
		out = append(out, fmt.Sprintf("%s value %d %s", path, n.Time(), n.Value()))
	case DeletedNode:
		out = append(out, fmt.Sprintf("%s deleted %d", path, n.Time()))
	}
	return out
}

// rebuilt is the document built back from n's tree with the Set methods.
func rebuilt(t *testing.T, n Node) *Doc {
	t.Helper()
	d := NewDoc()
	d.SetFloor(n.Time())
	for i := range n.Len() {
		m := n.Member(i)
		switch m.Kind() {
		case ObjectNode:
			d.SetObject(m.Key(), rebuilt(t, m))
		case ValueNode:
			if err := d.SetValue(m.Key(), m.Time(), m.Value()); err != nil {
				t.Fatal(err)
			}
		case DeletedNode:
			d.SetDeleted(m.Key(), m.Time())
		}
	}
	return d
}

// TestNodeReadsTheTree: Node shows every leaf with its time, the deletions and the floors a
// document built by merges holds.
func TestNodeReadsTheTree(t *testing.T) {
	d := merged(t,
		step{1, `{"env":{"hum":1,"t":2},"x":1,"arr":[1, [2,{"k":3}]]}`},
		step{5, `{"env":null,"gone":null}`},
		step{6, `{"env":{"co2":400}}`},
		step{7, `{"a":{"x":1,"y":2}}`},
		step{9, `{"a":{"y":null}}`},
		step{4, `{"a":null,"x":"s"}`},
		step{3, `{"x":"older","gone":1}`},
	)
	want := []string{
		"$ object floor=0",
		"$.a object floor=4",
		"$.a.x value 7 1",
		"$.a.y deleted 9",
		"$.arr value 1 [1,[2,{\"k\":3}]]",
		"$.env object floor=5",
		"$.env.co2 value 6 400",
		"$.gone deleted 5",
		`$.x value 4 "s"`,
	}
	if got := nodes(d.Root(), "$", nil); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("tree\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	root := d.Root()
	if root.Key() != "" || root.Value() != nil || !root.Visible() {
		t.Errorf("root: key %q value %q visible %v", root.Key(), root.Value(), root.Visible())
	}
	a, ok := root.Find("a")
	if !ok || a.Key() != "a" || a.Kind() != ObjectNode || a.Len() != 2 || !a.Visible() {
		t.Fatalf("Find(a) = %+v %v", a, ok)
	}
	if y, ok := a.Find("y"); !ok || y.Kind() != DeletedNode || y.Visible() || y.Value() != nil || y.Len() != 0 {
		t.Errorf("a.y: found %v kind %d visible %v", ok, y.Kind(), y.Visible())
	}
	if _, ok := root.Find("nope"); ok {
		t.Error("Find(nope) found a member")
	}
	if x, _ := root.Find("x"); x.Len() != 0 || !x.Visible() {
		t.Errorf("x: %d members, visible %v", x.Len(), x.Visible())
	}
	if _, ok := a.Member(1).Find("y"); ok {
		t.Error("a deletion has members")
	}
	if got := string(a.AppendState([]byte("pre"))); got != `pre{"x":1}` {
		t.Errorf("a rendered %s", got)
	}
	if arr, _ := root.Find("arr"); string(arr.AppendState(nil)) != `[1,[2,{"k":3}]]` {
		t.Errorf("arr rendered %s", arr.AppendState(nil))
	}
	if got, want := string(root.AppendState(nil)), string(d.AppendState(nil)); got != want {
		t.Errorf("root rendered %s, want %s", got, want)
	}
	// A deleted object with nothing newer below is not visible.
	e := merged(t, step{1, `{"o":{"p":1}}`}, step{2, `{"o":{"p":null}}`})
	if o, _ := e.Root().Find("o"); o.Kind() != ObjectNode || o.Visible() || e.Root().Visible() {
		t.Errorf("o: kind %d visible %v", o.Kind(), o.Visible())
	}
}

// TestZeroNode: the zero Node reads as an empty object.
func TestZeroNode(t *testing.T) {
	var n Node
	if n.Kind() != ObjectNode || n.Time() != 0 || n.Len() != 0 || n.Visible() || n.Value() != nil || n.Key() != "" {
		t.Errorf("zero Node: kind %d time %d len %d visible %v", n.Kind(), n.Time(), n.Len(), n.Visible())
	}
	if _, ok := n.Find("a"); ok {
		t.Error("zero Node has a member")
	}
	if got := string(n.AppendState(nil)); got != "{}" {
		t.Errorf("zero Node rendered %s", got)
	}
	if got := nodes(NewDoc().Root(), "$", nil); len(got) != 1 || got[0] != "$ object floor=0" {
		t.Errorf("empty document: %v", got)
	}
}

// TestRebuildFromNodes: reading a document through Node and building it back with the Set
// methods gives the same document, deletions, floors and times included, whatever records made
// it; the rebuilt document then decides later records as the original does.
func TestRebuildFromNodes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		records []step
	}{
		{"empty", nil},
		{"scalars", []step{{1e9, `{"on":true,"name":"n","v":-1.5e3}`}, {3e9 + 1, `{"v":2}`}}},
		{"nested", []step{{2, `{"p":{"q":{"r":1,"s":[0,[1]]},"t":"u"}}`}, {8, `{"p":{"q":{"s":9}}}`}}},
		{"deleted leaf", []step{{2, `{"p":{"q":1,"r":2}}`}, {3, `{"p":{"r":null}}`}}},
		{"deleted object", []step{{2, `{"p":{"q":1},"s":1}`}, {3, `{"p":null}`}}},
		{"rewritten after deletion", []step{{1, `{"p":{"q":1}}`}, {4, `{"p":null}`}, {7, `{"p":{"r":2}}`}}},
		{"floor below a newer leaf", []step{{1, `{"p":{"q":1}}`}, {9, `{"p":{"r":2}}`}, {5, `{"p":null}`}}},
		{"root floor", []step{{2, `{"p":{"q":1},"s":2}`}, {6, `{"p":{"r":3}}`}}},
		{"deletions only", []step{{3, `{"p":null,"q":{"r":null}}`}}},
		{"value then object", []step{{1, `{"p":"v"}`}, {2, `{"p":{"q":[]}}`}}},
		{"object then value", []step{{1, `{"p":{"q":0}}`}, {2, `{"p":[]}`}}},
		{"escapes", []step{{1, `{"k\"\n":"\u00e9\"]","tab\t":[{"n":null},"[\\"]}`}}},
		{"deep arrays", []step{{1, `{"a":[[1,[2]],{"b":[{"c":"]"}]}],"s":"[[["}`}}},
		{"extreme times", []step{{-9e18, `{"a":1}`}, {9e18, `{"b":null}`}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := merged(t, tc.records...)
			if tc.name == "root floor" {
				d.root.ts = 3 // DecodeJSON never makes one; a Doc can hold one
			}
			back := rebuilt(t, d.Root())
			if !bytes.Equal(back.AppendBinary(nil), d.AppendBinary(nil)) {
				t.Fatalf("rebuilt %q\nwant    %q", nodes(back.Root(), "$", nil), nodes(d.Root(), "$", nil))
			}
			if back.Depth() != d.Depth() || back.Size() != d.Size() {
				t.Errorf("depth %d size %d, want %d %d", back.Depth(), back.Size(), d.Depth(), d.Size())
			}
			// Every record of the history again, and older and newer ones: same decisions.
			for _, r := range append(tc.records, step{0, `{"a":0,"env":{"t":0},"x":0}`}, step{9e18, `{"a":null,"n":1}`}) {
				p, err := DecodeJSON([]byte(r.payload), r.ts)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := back.Merge(p), d.Merge(p); got != want {
					t.Errorf("merging %s at %d: changed %v, want %v", r.payload, r.ts, got, want)
				}
			}
			if !bytes.Equal(back.AppendBinary(nil), d.AppendBinary(nil)) {
				t.Errorf("after the same merges: %s, want %s", back.AppendState(nil), d.AppendState(nil))
			}
		})
	}
}

// TestSetMethods: the Set methods set as told (no merging), keep keys in order and reject what
// is not a value.
func TestSetMethods(t *testing.T) {
	d := NewDoc()
	sub := NewDoc()
	sub.SetFloor(4)
	sub.SetDeleted("z", 5)
	for _, err := range []error{
		d.SetValue("m", 9, []byte(`"new"`)),
		d.SetValue("c", 1, []byte(`[1,{"a":[2]}]`)),
		d.SetValue("m", 2, []byte(`"older, still set"`)),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	d.SetObject("a", sub)
	d.SetDeleted("b", 3)
	d.SetFloor(7) // not applied to the members
	want := []string{
		"$ object floor=7",
		"$.a object floor=4",
		"$.a.z deleted 5",
		"$.b deleted 3",
		`$.c value 1 [1,{"a":[2]}]`,
		`$.m value 2 "older, still set"`,
	}
	if got := nodes(d.Root(), "$", nil); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("tree\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := string(d.AppendState(nil)); got != `{"c":[1,{"a":[2]}],"m":"older, still set"}` {
		t.Errorf("state %s", got)
	}
	if d.Depth() != 4 {
		t.Errorf("depth %d, want 4", d.Depth())
	}
	for _, bad := range []string{``, `null`, `{}`, `{"a":1}`} {
		if err := d.SetValue("bad", 1, []byte(bad)); err == nil {
			t.Errorf("SetValue(%q) accepted", bad)
		}
	}
	if _, ok := d.Root().Find("bad"); ok {
		t.Error("a rejected value was set")
	}
	// After Grow, setting that many members in order takes no more room.
	g := NewDoc()
	g.Grow(3)
	c := cap(g.root.kids)
	for _, k := range []string{"a", "b", "c"} {
		g.SetDeleted(k, 1)
	}
	if c < 3 || cap(g.root.kids) != c {
		t.Errorf("capacity %d after Grow(3), %d after setting 3 members", c, cap(g.root.kids))
	}
}

// TestValueDepth: SetValue counts a value's depth as DecodeJSON does.
func TestValueDepth(t *testing.T) {
	for v, want := range map[string]uint8{`1`: 0, `"[x]"`: 0, `"\"[x"`: 0, `[1]`: 1, `[]`: 1, `[[1],{"a":"]"}]`: 2, `[{"a":[1]}]`: 3, `[[[["\\"]]]]`: 4} {
		if got := valueDepth([]byte(v)); got != want {
			t.Errorf("valueDepth(%s) = %d, want %d", v, got, want)
		}
		d, err := DecodeJSON([]byte(`{"x":`+v+`}`), 1)
		if err != nil {
			t.Fatal(err)
		}
		set := NewDoc()
		if err := set.SetValue("x", 1, []byte(v)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(set.AppendBinary(nil), d.AppendBinary(nil)) {
			t.Errorf("SetValue(%s) differs from DecodeJSON's", v)
		}
	}
}
