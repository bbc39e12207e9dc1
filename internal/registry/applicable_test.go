package registry

import (
	"fmt"
	"strings"
	"testing"

	"github.com/coapgw/coapgw/internal/processor"
)

// TestMaxPropertiesSetAside: with Options.MaxProperties a record that would give its thing more
// properties is set aside with the count in its reason, alone or coalesced in a batch; the
// records that fit are applied.
func TestMaxPropertiesSetAside(t *testing.T) {
	e := newEnv(t, Options{MaxProperties: 3})
	e.send(rec("sensor", "a", 1, `{"p1":1,"p2":{"q":[1,2,3]}}`))
	out := e.apply(e.batch(rec("sensor", "a", 2, `{"p3":3,"p4":4}`), rec("sensor", "a", 3, `{"p1":9,"p3":3}`)))
	if out[0].Result != processor.SetAside || out[0].Reason != "thing would have 4 properties, over the limit of 3" {
		t.Errorf("a fourth property: %+v", out[0])
	}
	if out[1].Result != processor.Applied {
		t.Errorf("the third property: %+v", out[1])
	}
	d, _ := e.shadow("a")
	if len(d.State.Reported) != 3 || d.State.Reported["p1"] != 9.0 {
		t.Errorf("reported %v", d.State.Reported)
	}
	out = e.apply(e.batch(rec("sensor", "a", 4, `{"p1":null,"p4":4}`)))
	if out[0].Result != processor.Applied {
		t.Errorf("a property for a deleted one: %+v", out[0])
	}
}

// TestWouldBe: the state a record would give its thing, measured as the limits measure it.
func TestWouldBe(t *testing.T) {
	e := newEnv(t, Options{})
	before, after, err := e.r.WouldBe(t.Context(), "a", []byte(`{"x":1,"y":{"z":"s"}}`), at(1).UnixNano())
	if err != nil || before != (StateSize{2, 0}) || after != (StateSize{21, 2}) {
		t.Fatalf("unknown thing: %+v %+v %v", before, after, err)
	}
	e.send(rec("sensor", "a", 1, `{"x":1,"y":{"z":"s"}}`))
	before, after, err = e.r.WouldBe(t.Context(), "a", []byte(`{"x":22,"w":[1,{"v":2}],"y":null}`), at(2).UnixNano())
	if err != nil || before != (StateSize{21, 2}) || after != (StateSize{len(`{"w":[1,{"v":2}],"x":22}`), 2}) {
		t.Fatalf("known thing: %+v %+v %v", before, after, err)
	}
	// An older record does not overwrite newer properties: nothing changes.
	if _, after, _ = e.r.WouldBe(t.Context(), "a", []byte(`{"x":"`+strings.Repeat("o", 100)+`"}`), at(0).UnixNano()); after != (StateSize{21, 2}) {
		t.Fatalf("older record: %+v", after)
	}
}

// TestShadowRulesSetAside: a record that breaks a shadow rule and reached the registry anyway
// (stored before the device API checked it) is set aside with the rule as its reason, and the
// thing keeps its state.
func TestShadowRulesSetAside(t *testing.T) {
	e := newEnv(t, Options{})
	e.send(rec("sensor", "a", 1, `{"t":1}`))
	out := e.apply(e.batch(rec("sensor", "a", 2, `{"t":2,"t":3}`), rec("sensor", "a", 3, `{"t":1e400}`), rec("sensor", "a", 4, `{"":5}`)))
	for i, want := range []string{`duplicate key "t"`, "number out of range", "empty key"} {
		if out[i].Result != processor.SetAside || !strings.HasPrefix(out[i].Reason, want) {
			t.Errorf("record %d: %+v, want set aside %q", i, out[i], want)
		}
	}
	if d, _ := e.shadow("a"); len(d.State.Reported) != 1 || d.State.Reported["t"] != 1.0 {
		t.Errorf("reported %v", d.State.Reported)
	}
}

// BenchmarkWouldBe is the device API's exact decision: a thing's state read and decoded, a
// record merged into it, both measured; with a state of about 4 KB (100 properties).
func BenchmarkWouldBe(b *testing.B) {
	e := newEnv(b, Options{})
	var sb strings.Builder
	sb.WriteString("{")
	for i := range 100 {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `"property-%03d":"%s"`, i, strings.Repeat("v", 20))
	}
	sb.WriteString("}")
	e.send(rec("sensor", "a", 1, sb.String()))
	payload := []byte(`{"property-007":"new","temp":21.5}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, after, err := e.r.WouldBe(b.Context(), "a", payload, at(2).UnixNano()); err != nil || after.Properties != 101 {
			b.Fatal(after, err)
		}
	}
}
