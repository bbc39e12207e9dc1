package ingest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMaxThings: with --max-things 3, three distinct things are accepted; the fourth gets 5.03
// with Max-Age and "thing limit reached" and nothing reaches the spool; the first three keep
// getting 2.04, also under another type; the counter and the gauge say so.
func TestMaxThings(t *testing.T) {
	r := newRigWith(t, Config{GatewayID: "gw-test", MaxThings: 3})
	for i := range 3 {
		if resp := r.do(coapmsg.POST, pathOpts("sensor", fmt.Sprintf("dev-%d", i)), `{"t":1}`); resp.Code != coapmsg.Changed {
			t.Fatalf("dev-%d: %v, want 2.04", i, resp.Code)
		}
	}
	if got := r.h.things.n.Load(); got != 3 {
		t.Fatalf("things known = %d, want 3", got)
	}
	resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-3"), `{"t":1}`)
	if resp.Code != coapmsg.ServiceUnavailable || string(resp.Payload) != "thing limit reached" {
		t.Fatalf("dev-3: %v %q, want 5.03 \"thing limit reached\"", resp.Code, resp.Payload)
	}
	if ma := maxAge(t, resp); ma != 5 {
		t.Fatalf("Max-Age %d, want 5 (--retry-after)", ma)
	}
	if n := r.sp.stored(); n != 3 {
		t.Fatalf("%d records stored, want 3: the refused one reached the spool", n)
	}
	if got := testutil.ToFloat64(r.h.results[resThingLimit]); got != 1 {
		t.Fatalf("thing_limit counter = %v, want 1", got)
	}
	for i := range 3 {
		for _, typ := range []string{"sensor", "meter"} {
			if resp := r.do(coapmsg.POST, pathOpts(typ, fmt.Sprintf("dev-%d", i)), `{"t":2}`); resp.Code != coapmsg.Changed {
				t.Fatalf("%s/dev-%d at the cap: %v, want 2.04", typ, i, resp.Code)
			}
		}
	}
	if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-4"), `{"t":1}`); resp.Code != coapmsg.ServiceUnavailable {
		t.Fatalf("dev-4: %v, want 5.03", resp.Code)
	}
	if n, c := r.sp.stored(), testutil.ToFloat64(r.h.results[resThingLimit]); n != 9 || c != 2 {
		t.Fatalf("stored %d (want 9), thing_limit %v (want 2)", n, c)
	}
	if got := r.h.things.n.Load(); got != 3 {
		t.Fatalf("things known = %d, want 3", got)
	}
}

// TestMaxThingsKnownAtStart: the things listed at start count against the cap and keep working,
// also when there are more of them than the cap; a list error fails New.
func TestMaxThingsKnownAtStart(t *testing.T) {
	list := &fakeRegistry{things: []KnownThing{{"a", "s"}, {"b", "s"}, {"c", "s"}}}
	r := newRigWith(t, Config{GatewayID: "gw-test", MaxThings: 4, Registry: list})
	if resp := r.do(coapmsg.POST, pathOpts("s", "new-1"), `{}`); resp.Code != coapmsg.Changed {
		t.Fatalf("new-1: %v, want 2.04", resp.Code)
	}
	if resp := r.do(coapmsg.POST, pathOpts("s", "new-2"), `{}`); resp.Code != coapmsg.ServiceUnavailable {
		t.Fatalf("new-2: %v, want 5.03", resp.Code)
	}
	r = newRigWith(t, Config{GatewayID: "gw-test", MaxThings: 2, Registry: list})
	for _, id := range []string{"a", "b", "c"} {
		if resp := r.do(coapmsg.POST, pathOpts("s", id), `{}`); resp.Code != coapmsg.Changed {
			t.Fatalf("%s (known, above the cap): %v, want 2.04", id, resp.Code)
		}
	}
	if resp := r.do(coapmsg.POST, pathOpts("s", "d"), `{}`); resp.Code != coapmsg.ServiceUnavailable {
		t.Fatalf("d: %v, want 5.03", resp.Code)
	}
	if _, err := New(Config{MaxThings: 1, Registry: &fakeRegistry{err: errors.New("boom")}}, &fakeSpool{}, nil, nil); err == nil {
		t.Fatal("New with a failing Registry.Things: no error")
	}
}

// TestThingLimitNoAlloc: a known thing costs a map lookup, no allocation.
func TestThingLimitNoAlloc(t *testing.T) {
	l, err := newThingIndex(10, &fakeRegistry{things: []KnownThing{{"dev-1", "sensor"}}})
	if err != nil {
		t.Fatal(err)
	}
	typ, id := []byte("sensor"), []byte("dev-1")
	if n := testing.AllocsPerRun(100, func() { l.admit(typ, id, nil) }); n != 0 {
		t.Fatalf("%v allocations per known thing, want 0", n)
	}
}

// BenchmarkServeCoAPThingCap is BenchmarkServeCoAP with --max-things on and the device known
// (from its first request on): one map lookup more.
func BenchmarkServeCoAPThingCap(b *testing.B) {
	benchServeCoAP(b, Config{GatewayID: "gw", MaxThings: 100_000})
}

// TestForgetThing: with --max-things 2 in local mode, a deleted thing (ForgetThing, which the
// HTTP API's DELETE calls) stops counting: a new thing is accepted without a restart, and the
// deleted name may come back under another type. A thing with a record not processed yet is not
// forgotten (that record will create it again): it keeps counting and keeps its type.
func TestForgetThing(t *testing.T) {
	reg := &fakeRegistry{}
	r := newLocalRig(t, Config{MaxThings: 2}, reg)
	post := func(typ, id string, want coapmsg.Code) { t.Helper(); r.postWant(t, typ, id, want) }
	post("sensor", "dev-1", coapmsg.Changed)
	post("sensor", "dev-2", coapmsg.Changed)
	reg.apply(r.h)
	post("sensor", "dev-3", coapmsg.ServiceUnavailable)
	if !r.h.ForgetThing("dev-1") {
		t.Fatal("ForgetThing(dev-1), every record processed: false")
	}
	if got := r.h.things.n.Load(); got != 1 {
		t.Fatalf("things known after the delete = %d, want 1", got)
	}
	post("sensor", "dev-3", coapmsg.Changed)
	post("sensor", "dev-4", coapmsg.ServiceUnavailable)

	// dev-3's record is not processed yet: it stays, with its type.
	if r.h.ForgetThing("dev-3") {
		t.Fatal("ForgetThing(dev-3) with a record not processed: true")
	}
	post("meter", "dev-3", coapmsg.BadRequest)
	reg.apply(r.h)
	if !r.h.ForgetThing("dev-3") {
		t.Fatal("ForgetThing(dev-3) once processed: false")
	}
	post("meter", "dev-3", coapmsg.Changed) // another type: the name is new
	if !r.h.ForgetThing("no-such-thing") {
		t.Fatal("ForgetThing of an unknown name: false")
	}
	if got := r.h.things.n.Load(); got != 2 {
		t.Fatalf("things known = %d, want 2", got)
	}
}

// TestThingChanged: a thing a retried record created in the registry is learnt with its type and
// counts against --max-things; a known thing's state is read from the registry again after a
// retry changed it.
func TestThingChanged(t *testing.T) {
	reg := &fakeRegistry{}
	r := newLocalRig(t, Config{MaxThings: 2}, reg)
	post := func(typ, id string, want coapmsg.Code) { t.Helper(); r.postWant(t, typ, id, want) }
	post("sensor", "dev-1", coapmsg.Changed)
	reg.apply(r.h)
	r.h.ThingChanged("dev-2", "bench")
	if got := r.h.things.n.Load(); got != 2 {
		t.Fatalf("things known = %d, want 2", got)
	}
	post("sensor", "dev-2", coapmsg.BadRequest) // it exists with type bench
	post("sensor", "dev-3", coapmsg.ServiceUnavailable)
	reads := reg.shadowReads()
	post("bench", "dev-2", coapmsg.Changed)
	reg.apply(r.h)
	post("sensor", "dev-1", coapmsg.Changed) // within its known budget: no read
	if got := reg.shadowReads(); got != reads+1 {
		t.Fatalf("%d state reads, want %d (dev-2's)", got, reads+1)
	}
	reg.apply(r.h)
	r.h.ThingChanged("dev-1", "sensor")
	post("sensor", "dev-1", coapmsg.Changed)
	if got := reg.shadowReads(); got != reads+2 {
		t.Fatalf("%d state reads, want %d: dev-1's state not read again after the change", got, reads+2)
	}
	// Deleted and created again by a retry with another type: the new type holds.
	reg.apply(r.h)
	r.h.ThingChanged("dev-1", "meter")
	post("sensor", "dev-1", coapmsg.BadRequest)
	post("meter", "dev-1", coapmsg.Changed)
	if got := r.h.things.n.Load(); got != 2 {
		t.Fatalf("things known = %d, want 2", got)
	}
}

// postWant posts {"t":1} to /typ/id and fails t unless the answer is want.
func (r *rig) postWant(t *testing.T, typ, id string, want coapmsg.Code) {
	t.Helper()
	if resp := r.do(coapmsg.POST, pathOpts(typ, id), `{"t":1}`); resp.Code != want {
		t.Fatalf("%s/%s: %v %q, want %v", typ, id, resp.Code, resp.Payload, want)
	}
}
