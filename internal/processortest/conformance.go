package processortest

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/record"
)

// SinkHarness is a processor.Sink under test and the means to look into the store it writes, for
// RunSinkConformance. The hooks fail the test themselves (with the t the harness was made for)
// if the store cannot be read.
type SinkHarness struct {
	// Sink is the sink under test, over an empty store (or one shared with other cases: the cases
	// use thing names of their own).
	Sink processor.Sink
	// Restart returns a new sink over the same store that has forgotten everything it kept in
	// memory (the local registry closed and reopened, an AWS IoT worker with cold caches). The
	// suite uses it instead of the old one from then on.
	Restart func() processor.Sink

	// Reported returns a thing's reported state as JSON (any key order; without what the sink
	// keeps for itself), "" if the thing has no shadow.
	Reported func(thing string) string
	// ThingType returns the type a thing exists with, "" if it does not exist.
	ThingType func(thing string) string
	// Version returns the version of a thing's shadow: it grows by one with every batch that
	// changes the shadow, and never otherwise.
	Version func(thing string) int64
	// Snapshot returns everything about the store and the given things that a batch of
	// duplicates must leave as it was (state, versions, counters, write calls), as text.
	Snapshot func(things ...string) string

	// Stale is the outcome of a record the sink has not seen before that changes nothing,
	// because every property it sets or deletes is newer in the shadow: Applied for a sink that
	// counts records (the local registry counts it as a message), Duplicate for one that can only
	// tell by the shadow (AWS IoT: it costs no call).
	Stale processor.Result
	// RedeliveredSetAside is the outcome of a record set aside before (an invalid payload) that
	// comes again with the same (gw, seq): Duplicate for a sink that remembers the sequence
	// numbers it processed, SetAside for one that judges each record afresh.
	RedeliveredSetAside processor.Result

	// Optional hooks; nil where the sink has no such thing.

	// Calls returns every call the sink made to its store so far (AWS API calls), as text: a
	// record the sink can judge from what it holds in memory costs no call.
	Calls func() string
	// Retried returns how many writes the transport has retried so far. A write whose answer
	// was lost and whose retry found it applied makes the record a Duplicate instead of Applied
	// (an emulator under load); the suite excuses that only when Retried grew during the batch.
	Retried func() int
	// Messages returns how many records were applied to a thing (the registry's message count).
	Messages func(thing string) int64
	// Totals returns the store's totals (the registry's counts).
	Totals func() Totals
}

// Totals are a store's counts of things, applied records and records set aside.
type Totals struct {
	Things, Messages, SetAside int64
}

// RunSinkConformance runs the behaviour every processor.Sink must show (idempotent redelivery,
// per-property order by received_at, a thing that exists with another type), each case as a
// subtest with a harness from newHarness.
func RunSinkConformance(t *testing.T, newHarness func(t *testing.T) *SinkHarness) {
	for _, c := range []struct {
		name string
		run  func(*conformance)
	}{
		{"Redelivery", testRedelivery},
		{"OutOfOrder", testOutOfOrder},
		{"TypeConflict", testTypeConflict},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			c.run(&conformance{t: t, h: h, sink: h.Sink})
		})
	}
}

var conformanceT0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// conformance is one case's state: the current sink and the last sequence number used.
type conformance struct {
	t    *testing.T
	h    *SinkHarness
	sink processor.Sink
	seq  uint64
}

// rec is a record of gateway gw1, received sec seconds after the suite's epoch.
func rec(typ, thing string, sec float64, payload string) record.Record {
	return Rec("gw1", typ, thing, conformanceT0.Add(time.Duration(sec*float64(time.Second))), payload)
}

func (c *conformance) restart() { c.sink = c.h.Restart() }

// want is an expected outcome: a result and, for SetAside, a text the reason must contain ("" =
// any reason) or, with exact, equal.
type want struct {
	res    processor.Result
	reason string
	exact  bool
}

func is(r processor.Result) want { return want{res: r} }

// apply numbers recs (each Seq 0 gets the next sequence number; the others keep theirs, so a
// slice applied twice is a redelivery), applies them as one batch and checks the outcomes. A
// batch whose outcomes are all Duplicate must leave the harness's Snapshot as it was.
func (c *conformance) apply(what string, recs []record.Record, wants ...want) []processor.Outcome {
	c.t.Helper()
	if len(wants) != len(recs) {
		c.t.Fatalf("%s: %d records, %d outcomes expected", what, len(recs), len(wants))
	}
	things := map[string]bool{}
	for i := range recs {
		if recs[i].Seq == 0 {
			c.seq++
			recs[i].Seq = c.seq
		}
		things[recs[i].ID] = true
	}
	names := make([]string, 0, len(things))
	for n := range things {
		names = append(names, n)
	}
	slices.Sort(names)
	before := c.h.Snapshot(names...)
	retried := 0
	if c.h.Retried != nil {
		retried = c.h.Retried()
	}
	out, err := c.sink.Apply(c.t.Context(), Batch(c.t, recs...))
	if err != nil {
		c.t.Fatalf("%s: Apply: %v", what, err)
	}
	if len(out) != len(recs) {
		c.t.Fatalf("%s: %d outcomes for %d records", what, len(out), len(recs))
	}
	excused := c.h.Retried != nil && c.h.Retried() > retried
	allDup := true
	for i, o := range out {
		w := wants[i]
		ok := o.Result == w.res
		if w.res == processor.Applied && o.Result == processor.Duplicate && excused {
			ok = true // the write was retried after its answer was lost: see SinkHarness.Retried
			allDup = false
		}
		if w.res == processor.SetAside && ok {
			ok = w.exact && o.Reason == w.reason || !w.exact && strings.Contains(o.Reason, w.reason)
		}
		if !ok {
			c.t.Errorf("%s: record %d (%s@%v): %v %q, want %v %q", what, i, recs[i].ID, recs[i].ReceivedAt.Sub(conformanceT0), o.Result, o.Reason, w.res, w.reason)
		}
		allDup = allDup && o.Result == processor.Duplicate
	}
	if allDup {
		if after := c.h.Snapshot(names...); after != before {
			c.t.Errorf("%s: a batch of duplicates changed the store:\n%s\n→\n%s", what, before, after)
		}
	}
	return out
}

// reported checks a thing's reported state (compared as JSON, whatever the key order).
func (c *conformance) reported(what, thing, want string) {
	c.t.Helper()
	if got := canonJSON(c.t, c.h.Reported(thing)); got != canonJSON(c.t, want) {
		c.t.Errorf("%s: %s reports %s, want %s", what, thing, got, want)
	}
}

func (c *conformance) version(what, thing string, want int64) {
	c.t.Helper()
	if got := c.h.Version(thing); got != want {
		c.t.Errorf("%s: %s shadow version %d, want %d", what, thing, got, want)
	}
}

func (c *conformance) messages(what, thing string, want int64) {
	c.t.Helper()
	if c.h.Messages == nil {
		return
	}
	if got := c.h.Messages(thing); got != want {
		c.t.Errorf("%s: %s has %d records applied, want %d", what, thing, got, want)
	}
}

func (c *conformance) thingType(what, thing, want string) {
	c.t.Helper()
	if got := c.h.ThingType(thing); got != want {
		c.t.Errorf("%s: thing %s has type %q, want %q", what, thing, got, want)
	}
}

func canonJSON(t *testing.T, s string) string {
	t.Helper()
	if s == "" {
		return ""
	}
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, s)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// testRedelivery: the same batch again (a redelivery after a crash) changes nothing, counts
// nothing and, where the sink can tell from memory, costs no call; a batch straddling what was
// applied applies only the new records.
func testRedelivery(c *conformance) {
	first := []record.Record{
		rec("sensor", "r-a", 1, `{"v":1}`), rec("sensor", "r-b", 1, `{"v":1}`),
		rec("sensor", "r-a", 2, `{"v":2,"w":[1]}`), rec("sensor", "r-c", 1, `not json`),
	}
	applied := is(processor.Applied)
	c.apply("first delivery", first, applied, applied, applied, want{res: processor.SetAside, reason: "JSON"})
	c.reported("first delivery", "r-a", `{"v":2,"w":[1]}`)
	snap := c.h.Snapshot("r-a", "r-b", "r-c")
	var calls string
	if c.h.Calls != nil {
		calls = c.h.Calls()
	}
	dup := is(processor.Duplicate)
	c.apply("redelivery", slices.Clone(first), dup, dup, dup, is(c.h.RedeliveredSetAside))
	if got := c.h.Snapshot("r-a", "r-b", "r-c"); got != snap {
		c.t.Errorf("redelivery changed the store:\n%s\n→\n%s", snap, got)
	}
	if c.h.Calls != nil {
		if got := c.h.Calls(); got != calls {
			c.t.Errorf("redelivery made calls: %s → %s", calls, got)
		}
	}
	c.thingType("redelivery", "r-a", "sensor")
	c.thingType("redelivery", "r-b", "sensor")
	c.thingType("redelivery", "r-c", "") // its only record was set aside
	c.messages("redelivery", "r-a", 2)
	c.messages("redelivery", "r-b", 1)
	if c.h.Totals != nil {
		if got, want := c.h.Totals(), (Totals{Things: 2, Messages: 3, SetAside: 1}); got != want {
			c.t.Errorf("redelivery: totals %+v, want %+v", got, want)
		}
	}
	c.version("redelivery", "r-a", 1)
	// A batch that straddles what was applied: the old record is a duplicate, the new one applied.
	old := first[2]
	c.apply("straddling batch", []record.Record{old, rec("sensor", "r-a", 5, `{"v":5}`)}, dup, applied)
	c.reported("straddling batch", "r-a", `{"v":5,"w":[1]}`)
	c.messages("straddling batch", "r-a", 3)
	c.version("straddling batch", "r-a", 2)
}

// testOutOfOrder: per property, the record received last wins, whatever the order of delivery;
// an older record still sets what no newer one touched, never overwrites or resurrects what a
// newer one wrote or deleted, and the sink still knows so after a restart (or on a worker with
// cold caches).
func testOutOfOrder(c *conformance) {
	applied, stale := is(processor.Applied), is(c.h.Stale)
	one := func(what string, r record.Record, w want) { c.t.Helper(); c.apply(what, []record.Record{r}, w) }

	one("newer first", rec("sensor", "o-x", 20, `{"temp":22}`), applied)
	one("older with a new property", rec("sensor", "o-x", 10, `{"temp":11,"hum":50}`), applied)
	c.reported("older with a new property", "o-x", `{"hum":50,"temp":22}`)
	one("deletion", rec("sensor", "o-x", 30, `{"hum":null}`), applied)
	c.reported("deletion", "o-x", `{"temp":22}`)
	v := c.h.Version("o-x")
	one("older than both", rec("sensor", "o-x", 15, `{"hum":60,"temp":1}`), stale)
	c.reported("older than both (no resurrection, no overwrite)", "o-x", `{"temp":22}`)
	c.version("older than both", "o-x", v)
	c.messages("older than both", "o-x", 4)

	dev := []record.Record{rec("sensor", "o-dev", 10, `{"temp":22,"env":{"hum":40}}`)}
	c.apply("nested", dev, applied)
	var calls string
	if c.h.Calls != nil {
		calls = c.h.Calls()
	}
	v = c.h.Version("o-dev")
	c.apply("the same record again", slices.Clone(dev), is(processor.Duplicate))
	if c.h.Calls != nil {
		if got := c.h.Calls(); got != calls {
			c.t.Errorf("a redelivered record made calls: %s → %s", calls, got)
		}
	}
	one("an older record", rec("sensor", "o-dev", 5, `{"temp":11,"env":{"hum":99}}`), stale)
	c.reported("an older record", "o-dev", `{"env":{"hum":40},"temp":22}`)
	c.version("an older record", "o-dev", v)
	one("an older record with a new property", rec("sensor", "o-dev", 6, `{"temp":12,"batt":3.1}`), applied)
	c.reported("an older record with a new property", "o-dev", `{"batt":3.1,"env":{"hum":40},"temp":22}`)
	// In one batch the newest wins whatever the order; each record newer than the shadow is
	// applied, one older than the shadow is stale.
	c.apply("one batch out of order", []record.Record{
		rec("sensor", "o-dev", 30, `{"temp":30}`), rec("sensor", "o-dev", 20, `{"temp":20}`), rec("sensor", "o-dev", 8, `{"temp":8}`),
	}, applied, applied, stale)
	c.reported("one batch out of order", "o-dev", `{"batt":3.1,"env":{"hum":40},"temp":30}`)

	c.apply("a property written then deleted", []record.Record{
		rec("sensor", "o-cold", 10, `{"temp":22,"gone":1}`), rec("sensor", "o-cold", 11, `{"gone":null}`),
	}, applied, applied)
	c.reported("a property written then deleted", "o-cold", `{"temp":22}`)

	// After a restart (cold caches) the times of every property and deletion are still known.
	c.restart()
	one("after a restart, older than a deletion", rec("sensor", "o-x", 26, `{"hum":61}`), stale)
	c.reported("after a restart", "o-x", `{"temp":22}`)
	c.apply("after a restart, older records", []record.Record{
		rec("sensor", "o-cold", 5, `{"temp":11}`), rec("sensor", "o-cold", 6, `{"gone":5}`),
	}, stale, stale)
	c.reported("after a restart, older records", "o-cold", `{"temp":22}`)
}

// testTypeConflict: a record for a thing that exists with another type is set aside with the
// reason "thing X exists with type Y"; the records behind it are applied; the thing keeps its
// type; the sink knows the conflict after a restart too.
func testTypeConflict(c *conformance) {
	applied := is(processor.Applied)
	conflict := want{res: processor.SetAside, reason: "thing t-a exists with type sensor", exact: true}
	c.apply("first record", []record.Record{rec("sensor", "t-a", 1, `{"v":1}`)}, applied)
	c.apply("another type", []record.Record{rec("meter", "t-a", 2, `{"v":2}`), rec("sensor", "t-a", 3, `{"v":3}`)}, conflict, applied)
	c.thingType("another type", "t-a", "sensor")
	c.messages("another type", "t-a", 2)
	c.reported("another type", "t-a", `{"v":3}`)
	var calls string
	if c.h.Calls != nil {
		calls = c.h.Calls()
	}
	c.apply("another type again", []record.Record{rec("meter", "t-a", 4, `{"v":4}`)}, conflict)
	if c.h.Calls != nil {
		if got := c.h.Calls(); got != calls {
			c.t.Errorf("a conflict already known made calls: %s → %s", calls, got)
		}
	}
	c.restart()
	c.apply("another type after a restart", []record.Record{rec("meter", "t-a", 5, `{"v":5}`)}, conflict)
	c.apply("the right type after a restart", []record.Record{rec("sensor", "t-a", 6, `{"v":6}`)}, applied)
	c.thingType("after a restart", "t-a", "sensor")
	c.messages("after a restart", "t-a", 3)
	c.reported("after a restart", "t-a", `{"v":6}`)
}
