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

// TestReportedState: the state the device API decides on, as Apply left it; an empty one for an
// unknown thing; Properties counts values, arrays included, as MaxProperties does.
func TestReportedState(t *testing.T) {
	e := newEnv(t, Options{})
	d, err := e.r.ReportedState(t.Context(), "a")
	if err != nil || !d.Empty() || d.Size() != 2 || d.Properties() != 0 {
		t.Fatalf("unknown thing: %s %v", d.AppendState(nil), err)
	}
	e.send(rec("sensor", "a", 1, `{"x":1,"y":{"z":"s","w":[1,{"v":2}]}}`), rec("sensor", "a", 2, `{"x":null}`))
	d, err = e.r.ReportedState(t.Context(), "a")
	if err != nil || string(d.AppendState(nil)) != `{"y":{"w":[1,{"v":2}],"z":"s"}}` || d.Properties() != 2 {
		t.Fatalf("known thing: %s, %d properties, %v", d.AppendState(nil), d.Properties(), err)
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

// BenchmarkReportedState is the device API's exact decision: a thing's state read and decoded,
// a record merged into it, the result measured; with a state of about 4 KB (100 properties).
func BenchmarkReportedState(b *testing.B) {
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
		d, err := e.r.ReportedState(b.Context(), "a")
		if err != nil {
			b.Fatal(err)
		}
		p, err := processor.DecodeJSON(payload, at(2).UnixNano())
		if err != nil {
			b.Fatal(err)
		}
		d.Merge(p)
		if d.Size() > processor.MaxShadowBytes || d.Properties() != 101 {
			b.Fatal(d.Size(), d.Properties())
		}
	}
}
