package awsiot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/aws/smithy-go"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/record"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func newTestSink(t testing.TB, f *fakeAWS, cfg Config) *Sink {
	t.Helper()
	s, err := newSink(cfg, f, f, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func rec(id string, sec float64, payload string) record.Record {
	return processortest.Rec("gw-1", "sensor", id, t0.Add(time.Duration(sec*float64(time.Second))), payload)
}

func results(out []processor.Outcome) string {
	var s []string
	for _, o := range out {
		s = append(s, o.Result.String())
	}
	return strings.Join(s, ",")
}

func apply(t testing.TB, s *Sink, recs ...record.Record) []processor.Outcome {
	t.Helper()
	out, err := s.Apply(context.Background(), processortest.Batch(t, recs...))
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return out
}

// TestCoalescedUpdates: one UpdateThingShadow per thing per batch, control-plane calls only on
// first sight (one CreateThingType per type, one CreateThing per thing), none afterwards.
func TestCoalescedUpdates(t *testing.T) {
	f := newFakeAWS()
	s := newTestSink(t, f, Config{})
	var recs []record.Record
	for i := range 30 {
		recs = append(recs, rec(fmt.Sprintf("dev-%d", i%3), float64(i), fmt.Sprintf(`{"temp":%d,"i%d":1}`, i, i%5)))
	}
	out := apply(t, s, recs...)
	if strings.Contains(results(out), "set_aside") {
		t.Fatalf("outcomes %s", results(out))
	}
	if got, reg := f.classic("UpdateThingShadow"), f.count("UpdateThingShadow@coapgw"); got != 3 || reg != 3 {
		t.Errorf("UpdateThingShadow %d and %d of the registry shadow, want 3 and 3 (one each per thing)", got, reg)
	}
	if ct, cth, d := f.count("CreateThingType"), f.count("CreateThing"), f.count("DescribeThing"); ct != 1 || cth != 3 || d != 0 {
		t.Errorf("control plane: CreateThingType %d CreateThing %d DescribeThing %d, want 1 3 0", ct, cth, d)
	}
	if got := f.state("dev-2"); got != `{"i0":1,"i2":1,"i3":1,"i4":1,"i1":1,"temp":29}` && canon(t, got) != canon(t, `{"i0":1,"i1":1,"i2":1,"i3":1,"i4":1,"temp":29}`) {
		t.Errorf("dev-2 state %s", got)
	}
	// Second batch for the same things: updates only.
	cp, gets := f.controlPlane(), f.count("GetThingShadow")
	apply(t, s, rec("dev-0", 100, `{"temp":1}`), rec("dev-1", 100, `{"temp":1}`), rec("dev-0", 101, `{"temp":2}`))
	if f.controlPlane() != cp || f.count("GetThingShadow") != gets {
		t.Errorf("calls for things already seen: %v", f)
	}
	if got, reg := f.classic("UpdateThingShadow"), f.count("UpdateThingShadow@coapgw"); got != 5 || reg != 5 {
		t.Errorf("UpdateThingShadow %d and %d of the registry shadow, want 5 and 5", got, reg)
	}
}

// TestSinkConformance runs the behaviour every sink shares (processortest) against the sink over
// the in-memory fake: it tells a redelivered or stale record only by the shadow's per-leaf times
// (Duplicate, no call) and judges a redelivered invalid record afresh (SetAside); Restart is a
// second worker with cold caches over the same fake. Its Snapshot holds the write and
// control-plane calls, so a batch of duplicates must make none.
func TestSinkConformance(t *testing.T) {
	processortest.RunSinkConformance(t, func(t *testing.T) *processortest.SinkHarness {
		f := newFakeAWS()
		return &processortest.SinkHarness{
			Sink:      newTestSink(t, f, Config{}),
			Restart:   func() processor.Sink { return newTestSink(t, f, Config{}) },
			Reported:  f.state,
			ThingType: func(thing string) string { f.mu.Lock(); defer f.mu.Unlock(); return f.things[thing] },
			Version: func(thing string) int64 {
				f.mu.Lock()
				defer f.mu.Unlock()
				if sh := f.shadows[thing]; sh != nil {
					return sh.version
				}
				return 0
			},
			Snapshot: func(things ...string) string {
				var b strings.Builder
				fmt.Fprintf(&b, "control plane %d, updates %d, publishes %d\n", f.controlPlane(), f.count("UpdateThingShadow"), f.count("Publish"))
				f.mu.Lock()
				defer f.mu.Unlock()
				for _, th := range things {
					if sh := f.shadows[th]; sh != nil {
						r, _ := json.Marshal(sh.reported)
						fmt.Fprintf(&b, "%s (type %q): %s v%d\n", th, f.things[th], r, sh.version)
					} else {
						fmt.Fprintf(&b, "%s (type %q): no shadow\n", th, f.things[th])
					}
				}
				return b.String()
			},
			Stale:               processor.Duplicate,
			RedeliveredSetAside: processor.SetAside,
			Calls:               f.String,
		}
	})
}

// TestColdCacheCalls: a second worker (empty cache) rebuilds a thing's document from its shadow
// and its registry shadow (two GetThingShadow) with no control-plane call (the type is in the
// registry shadow). What it then
// makes of older records is in the conformance suite.
func TestColdCacheCalls(t *testing.T) {
	f := newFakeAWS()
	a := newTestSink(t, f, Config{})
	apply(t, a, rec("dev", 10, `{"temp":22,"gone":1}`), rec("dev", 11, `{"gone":null}`))
	cp := f.controlPlane()
	b := newTestSink(t, f, Config{})
	out := apply(t, b, rec("dev", 5, `{"temp":11}`), rec("dev", 6, `{"gone":5}`))
	if results(out) != "duplicate,duplicate" {
		t.Fatalf("older records on a cold worker: %s, state %s", results(out), f.state("dev"))
	}
	if f.controlPlane() != cp || f.classic("GetThingShadow") != 2 || f.count("GetThingShadow@coapgw") != 2 {
		t.Fatalf("calls: %v", f)
	}
}

// TestConcurrentWriters: two workers with stale caches; version conflicts make them re-read and
// merge, so neither loses the other's newer properties.
func TestConcurrentWriters(t *testing.T) {
	f := newFakeAWS()
	a, b := newTestSink(t, f, Config{}), newTestSink(t, f, Config{})
	apply(t, a, rec("dev", 1, `{"x":1,"y":1}`))
	apply(t, b, rec("dev", 2, `{"y":2}`)) // b reads the shadow (cold), writes
	apply(t, a, rec("dev", 3, `{"x":3}`)) // a's cache is stale: conflict, re-read, merge
	apply(t, b, rec("dev", 1.5, `{"x":0,"y":0,"z":0}`))
	if got := f.state("dev"); canon(t, got) != canon(t, `{"x":3,"y":2,"z":0}`) {
		t.Fatalf("state %s", got)
	}
	if a.m == nil || f.count("GetThingShadow") < 3 {
		t.Fatalf("expected re-reads after conflicts: %v", f)
	}
	// A writer interleaving on every update: after ConflictRetries the batch fails transiently.
	f.beforeUpdate = func(string) { f.setShadow("dev", `{"x":3,"w":1}`) }
	_, err := a.Apply(context.Background(), processortest.Batch(t, rec("dev", 9, `{"x":9}`)))
	if err == nil || !strings.Contains(err.Error(), "conflict") {
		t.Fatalf("persistent conflicts: err %v", err)
	}
}

// TestTypeConflictForeignThing: a thing created outside coapgw with another type, or with none,
// is a conflict found once (CreateThing, DescribeThing): its records are set aside with the
// reason and its next records cost no call; a record with the thing's real type works. A
// conflict with a thing coapgw created is in the conformance suite.
func TestTypeConflictForeignThing(t *testing.T) {
	f := newFakeAWS()
	f.types["meter"], f.things["dev"] = true, "meter"
	f.things["bare"] = ""
	s := newTestSink(t, f, Config{})
	out := apply(t, s, rec("dev", 1, `{"a":1}`), rec("ok", 1, `{"a":1}`), rec("bare", 1, `{"a":1}`))
	if out[0].Result != processor.SetAside || out[0].Reason != "thing dev exists with type meter" {
		t.Fatalf("outcome %+v", out[0])
	}
	if out[1].Result != processor.Applied || out[2].Reason != "thing bare exists without a thing type" {
		t.Fatalf("outcomes %+v", out)
	}
	calls := f.String()
	out = apply(t, s, rec("dev", 2, `{"a":2}`))
	if out[0].Result != processor.SetAside || f.String() != calls {
		t.Fatalf("second record: %+v, calls %v → %v", out[0], calls, f)
	}
	// A record with the thing's real type works.
	r := processortest.Rec("gw-1", "meter", "dev", t0, `{"kwh":1}`)
	if out := apply(t, s, r); out[0].Result != processor.Applied {
		t.Fatalf("right type: %+v", out[0])
	}
	// A cold worker learns the conflict from the shadow's type and confirms it once.
	s2 := newTestSink(t, f, Config{})
	if out := apply(t, s2, rec("dev", 3, `{"a":3}`)); out[0].Reason != "thing dev exists with type meter" {
		t.Fatalf("cold worker: %+v", out[0])
	}
}

// TestSetAsideAndLimits: invalid records, the reserved key and records that would push the
// shadow over 8 KB are set aside; the rest of the batch is applied.
func TestSetAsideAndLimits(t *testing.T) {
	f := newFakeAWS()
	s := newTestSink(t, f, Config{})
	big := fmt.Sprintf(`{"blob":"%s"}`, strings.Repeat("x", 5000))
	big2 := fmt.Sprintf(`{"blob2":"%s"}`, strings.Repeat("y", 5000))
	out := apply(t, s,
		rec("dev", 1, `{"a":1}`),
		rec("dev", 2, big),
		rec("dev", 3, big2), // fits alone, not with blob
		rec("dev", 4, `{"_coapgw":{"v":2}}`),
		rec("dev", 5, `not json`),
		rec("bad name!", 5, `{"a":1}`),
	)
	if got := results(out); got != "applied,applied,set_aside,set_aside,set_aside,set_aside" {
		t.Fatalf("outcomes %s: %+v", got, out)
	}
	if !strings.Contains(out[2].Reason, "over the 8192-byte limit") || !strings.Contains(out[3].Reason, "reserved") {
		t.Fatalf("reasons %q %q", out[2].Reason, out[3].Reason)
	}
	if f.classic("UpdateThingShadow") != 1 {
		t.Fatalf("updates %d", f.classic("UpdateThingShadow"))
	}
	// A state just under the limit fits: nothing of coapgw's counts toward it (an earlier
	// version's reserved key took about 1 KB of it); one byte more does not.
	nearly := fmt.Sprintf(`{"n":"%s"}`, strings.Repeat("z", processor.MaxShadowBytes-8))
	if out = apply(t, s, rec("dev2", 1, nearly)); out[0].Result != processor.Applied {
		t.Fatalf("at the limit: %+v", out[0])
	}
	if got := len(f.state("dev2")); got != processor.MaxShadowBytes {
		t.Fatalf("state of %d bytes, want %d", got, processor.MaxShadowBytes)
	}
	over := fmt.Sprintf(`{"n":"%s"}`, strings.Repeat("z", processor.MaxShadowBytes-7))
	if out = apply(t, s, rec("dev3", 1, over)); out[0].Result != processor.SetAside || !strings.Contains(out[0].Reason, "over the 8192-byte limit") {
		t.Fatalf("over the limit: %+v", out[0])
	}
}

// TestClassification: which AWS errors fail the batch (transient: retried), which defer the
// thing's records (throttling: handed back with a delay, the rest of the batch applied) and which
// set its records aside (permanent).
func TestClassification(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		permanent bool
	}{
		{"throttling", apiErr("ThrottlingException"), false},
		{"too many requests", apiErr("TooManyRequestsException"), false},
		{"service unavailable", apiErr("ServiceUnavailableException"), false},
		{"internal failure", apiErr("InternalFailureException"), false},
		{"unauthorized", apiErr("UnauthorizedException"), false},
		{"access denied", apiErr("AccessDeniedException"), false},
		{"network", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, false},
		{"deadline", context.DeadlineExceeded, false},
		{"invalid request", apiErr("InvalidRequestException"), true},
		{"too large", apiErr("RequestEntityTooLargeException"), true},
		{"encoding", apiErr("UnsupportedDocumentEncodingException"), true},
		{"typed invalid request", &smithy.OperationError{Err: &types.InvalidRequestException{Message: aws.String("bad")}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pe *permanentError
			if got := errors.As(classify(tc.err), &pe); got != tc.permanent {
				t.Fatalf("permanent = %v, want %v", got, tc.permanent)
			}
			// Through the sink: an update failing so.
			f := newFakeAWS()
			s := newTestSink(t, f, Config{})
			f.fail = func(op, _ string) error {
				if op == "UpdateThingShadow" {
					return tc.err
				}
				return nil
			}
			out, err := s.Apply(context.Background(), processortest.Batch(t, rec("dev", 1, `{"a":1}`), rec("ok", 1, `[1]`)))
			if tc.permanent {
				if err != nil || out[0].Result != processor.SetAside || !strings.Contains(out[0].Reason, "rejected") {
					t.Fatalf("permanent: err %v, out %+v", err, out)
				}
				return
			}
			if deferral(tc.err) != nil {
				if err != nil || out[0].Result != processor.Deferred || out[0].After < 2*time.Second || out[1].Result != processor.SetAside {
					t.Fatalf("throttled: err %v, out %+v; want dev deferred by 2s or more", err, out)
				}
			} else if err == nil {
				t.Fatalf("transient error not returned: %+v", out)
			}
			// The retry of the batch succeeds once AWS recovers.
			f.fail = nil
			out, err = s.Apply(context.Background(), processortest.Batch(t, rec("dev", 1, `{"a":1}`), rec("ok", 1, `[1]`)))
			if err != nil || results(out) != "applied,set_aside" {
				t.Fatalf("retry: %v %s", err, results(out))
			}
		})
	}
}

// TestTransientPartialFailure: when one thing fails, the others are remembered, and the retry
// of the batch only calls for the failed one.
func TestTransientPartialFailure(t *testing.T) {
	for _, tc := range []struct {
		ordered bool
		updates int // on the retry
		results string
	}{
		// Versioned: dev-3's shadow and its registry shadow (its stamps).
		{false, 2, "duplicate,duplicate,duplicate,applied,duplicate,duplicate,duplicate,duplicate"},
		// Ordered: dev-3's registry shadow and its shadow; the others are not written again.
		{true, 2, "applied,applied,applied,applied,applied,applied,applied,applied"},
	} {
		t.Run(fmt.Sprintf("ordered=%v", tc.ordered), func(t *testing.T) { transientPartialFailure(t, tc.ordered, tc.updates, tc.results) })
	}
}

func transientPartialFailure(t *testing.T, ordered bool, updates int, want string) {
	f := newFakeAWS()
	s := newTestSink(t, f, Config{Ordered: ordered})
	f.fail = func(op, thing string) error {
		if op == "UpdateThingShadow" && thing == "dev-3" {
			return apiErr("ServiceUnavailableException")
		}
		return nil
	}
	var recs []record.Record
	for i := range 8 {
		recs = append(recs, rec(fmt.Sprintf("dev-%d", i), 1, `{"a":1}`))
	}
	b := processortest.Batch(t, recs...)
	if _, err := s.Apply(context.Background(), b); err == nil {
		t.Fatal("no error")
	}
	f.fail = nil
	before := f.count("UpdateThingShadow")
	out, err := s.Apply(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.count("UpdateThingShadow") - before; got != updates {
		t.Fatalf("retry made %d updates, want %d", got, updates)
	}
	if got := results(out); got != want {
		t.Fatalf("outcomes %s", got)
	}
}

// TestThingTypeCreatedOnce: things of one new type updated concurrently share one
// CreateThingType; a type deleted behind the cache's back is recreated.
func TestThingTypeCreatedOnce(t *testing.T) {
	f := newFakeAWS()
	s := newTestSink(t, f, Config{Concurrency: 16})
	var recs []record.Record
	for i := range 64 {
		recs = append(recs, rec(fmt.Sprintf("dev-%d", i), 1, `{"a":1}`))
	}
	apply(t, s, recs...)
	if got := f.count("CreateThingType"); got != 1 {
		t.Fatalf("CreateThingType %d", got)
	}
	f.mu.Lock()
	delete(f.types, "sensor")
	f.mu.Unlock()
	apply(t, s, rec("new-dev", 1, `{"a":1}`))
	if got := f.count("CreateThingType"); got != 2 {
		t.Fatalf("CreateThingType %d after the type vanished", got)
	}
}

// TestCacheBounded: the thing cache holds at most ThingCacheSize things; an evicted thing costs
// its shadow and registry shadow again (two GetThingShadow) but no control-plane call.
func TestCacheBounded(t *testing.T) {
	f := newFakeAWS()
	s := newTestSink(t, f, Config{ThingCacheSize: 10})
	for i := range 25 {
		apply(t, s, rec(fmt.Sprintf("dev-%d", i), 1, `{"a":1}`))
	}
	if s.CachedThings() != 10 {
		t.Fatalf("cached %d", s.CachedThings())
	}
	cp, gets := f.controlPlane(), f.count("GetThingShadow")
	apply(t, s, rec("dev-0", 2, `{"a":2}`))
	if f.controlPlane() != cp || f.count("GetThingShadow") != gets+2 {
		t.Fatalf("evicted thing: %v", f)
	}
	c := newLRU[string, int](2)
	c.Add("a", 1)
	c.Add("b", 2)
	c.Get("a")
	c.Add("c", 3)
	if _, ok := c.Get("b"); ok {
		t.Fatal("least recently used key kept")
	}
	if v, ok := c.Get("a"); !ok || v != 1 {
		t.Fatal("recently used key evicted")
	}
}

// TestPublish: every valid record is published once, to the templated topic, even when the
// batch is retried after a transient failure.
func TestPublish(t *testing.T) {
	f := newFakeAWS()
	s := newTestSink(t, f, Config{PublishTopic: "$aws/rules/coapgw/{type}/{thing}"})
	f.fail = func(op, thing string) error {
		if op == "UpdateThingShadow" && thing == "b" {
			return apiErr("ServiceUnavailableException")
		}
		return nil
	}
	b := processortest.Batch(t, rec("a", 1, `{"x":1}`), rec("a", 2, `{"x":2}`), rec("b", 1, `{"x":1}`), rec("c", 1, `bad`))
	if _, err := s.Apply(context.Background(), b); err == nil {
		t.Fatal("no error")
	}
	f.fail = nil
	if _, err := s.Apply(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if got := f.count("Publish"); got != 3 {
		t.Fatalf("published %d, want 3", got)
	}
	if f.count("topic:$aws/rules/coapgw/sensor/a") != 2 {
		t.Fatalf("topics: %v", f)
	}
	if _, err := newSink(Config{PublishTopic: "a/+/b"}, f, f, nil, nil); err == nil {
		t.Fatal("wildcard topic accepted")
	}
}

// TestParseForeignShadow: a shadow written by someone else (no coapgw key) is taken as written
// at its timestamp; the thing is then created with the record's type.
func TestParseForeignShadow(t *testing.T) {
	f := newFakeAWS()
	f.setShadow("dev", `{"temp":5,"fw":"1.0"}`) // timestamp 1_800_000_001 s
	s := newTestSink(t, f, Config{})
	at := time.Unix(1_800_000_000, 0)
	out := apply(t, s, processortest.Rec("gw", "sensor", "dev", at, `{"temp":1,"new":1}`))
	if results(out) != "applied" || canon(t, f.state("dev")) != canon(t, `{"fw":"1.0","new":1,"temp":5}`) {
		t.Fatalf("%s %s", results(out), f.state("dev"))
	}
	if f.count("CreateThing") != 1 {
		t.Fatalf("calls %v", f)
	}
	out = apply(t, s, processortest.Rec("gw", "sensor", "dev", at.Add(time.Hour), `{"temp":9}`))
	if results(out) != "applied" || !strings.Contains(f.state("dev"), `"temp":9`) {
		t.Fatalf("%s %s", results(out), f.state("dev"))
	}
}

// Concurrent Apply calls (the worker's pollers) never write one thing's shadow at the same time:
// no update overlaps another of the same thing, so none conflicts, and every record is in.
func TestConcurrentApplySerialisesAThing(t *testing.T) {
	f := newFakeAWS()
	var inflight, overlaps atomic.Int32
	f.beforeUpdate = func(string) {
		if inflight.Add(1) > 1 {
			overlaps.Add(1)
		}
		time.Sleep(2 * time.Millisecond) // a round trip, for others to arrive
		inflight.Add(-1)
	}
	s := newTestSink(t, f, Config{})
	apply(t, s, rec("dev-1", 0, `{"k0":1}`)) // the thing exists and is cached
	reads := f.count("GetThingShadow")
	var wg sync.WaitGroup
	for p := range 8 {
		wg.Go(func() {
			for n := range 5 {
				k := 1 + p*5 + n
				out, err := s.Apply(context.Background(), processortest.Batch(t, rec("dev-1", float64(k), fmt.Sprintf(`{"k%d":1}`, k))))
				if err != nil || results(out) != "applied" {
					t.Errorf("poller %d: %v %v", p, err, out)
				}
			}
		})
	}
	wg.Wait()
	if overlaps.Load() != 0 || f.count("GetThingShadow") != reads {
		t.Errorf("%d overlapping updates, %d re-reads after conflicts", overlaps.Load(), f.count("GetThingShadow")-reads)
	}
	var got map[string]any
	json.Unmarshal([]byte(f.state("dev-1")), &got)
	for k := range 41 {
		if _, ok := got[fmt.Sprintf("k%d", k)]; !ok {
			t.Errorf("k%d missing from %s", k, f.state("dev-1"))
		}
	}
}

// TestFallbackTimeFromMetadata: a property coapgw did not stamp counts as written when AWS wrote
// it (metadata.reported.<leaf>.timestamp), not at the document's timestamp, which is when the
// response was sent: a record received after the foreign write but before the read applies.
func TestFallbackTimeFromMetadata(t *testing.T) {
	s := fuzzSink()
	th, err := s.parseShadow([]byte(`{"state":{"reported":{"temp":5,"pos":{"lat":1}}},
		"metadata":{"reported":{"temp":{"timestamp":1000},"pos":{"lat":{"timestamp":1000}}}},
		"version":3,"timestamp":2000}`))
	if err != nil {
		t.Fatal(err)
	}
	b := processortest.Batch(t, processortest.Rec("gw", "sensor", "dev", time.Unix(1500, 0), `{"temp":1,"pos":{"lat":2}}`))
	next := th.doc.Clone()
	if !next.Merge(b.Updates[0].Doc) {
		t.Fatal("a record newer than the foreign write was taken as older")
	}
	if got := string(next.AppendState(nil)); got != `{"pos":{"lat":2},"temp":1}` {
		t.Fatalf("state %s", got)
	}
	// Older than the foreign write: nothing changes.
	b = processortest.Batch(t, processortest.Rec("gw", "sensor", "dev", time.Unix(900, 0), `{"temp":0}`))
	if th.doc.Clone().Merge(b.Updates[0].Doc) {
		t.Fatal("a record older than the foreign write changed the state")
	}
}

// TestSizeCountsDesired: AWS counts the desired state toward the 8 KB document limit too, so a
// record that fits next to the reported state alone but not with the desired state is set aside
// with the reason, not sent to be refused.
func TestSizeCountsDesired(t *testing.T) {
	f := newFakeAWS()
	f.setShadow("dev", `{"temp":5}`)
	f.setDesired("dev", fmt.Sprintf(`{"config":%q}`, strings.Repeat("c", 5000)))
	s := newTestSink(t, f, Config{})
	later := time.Unix(1_900_000_000, 0) // after the fake's shadow times
	out := apply(t, s, processortest.Rec("gw", "sensor", "dev", later, fmt.Sprintf(`{"blob":%q}`, strings.Repeat("b", 4000))))
	if results(out) != "set_aside" || !strings.Contains(out[0].Reason, "desired state") {
		t.Fatalf("%s %q", results(out), out[0].Reason)
	}
	if f.count("UpdateThingShadow") != 0 {
		t.Fatalf("calls %v", f)
	}
	if out := apply(t, s, processortest.Rec("gw", "sensor", "dev", later.Add(time.Second), `{"temp":6}`)); results(out) != "applied" {
		t.Fatalf("a small record: %s", results(out))
	}
}

// TestAdoptThings: a thing that exists without a type (fleet provisioning, JITP) or with another
// one is a permanent error by default, and with AdoptThings is used as it is — its type is not
// changed — in both write modes; the next records cost no control-plane call.
func TestAdoptThings(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		t.Run(fmt.Sprintf("ordered=%v", ordered), func(t *testing.T) {
			f := newFakeAWS()
			f.types["meter"] = true
			f.things["prov-1"] = ""      // untyped, as fleet provisioning creates them
			f.things["prov-2"] = "meter" // another type
			strict := newTestSink(t, f, Config{Ordered: ordered})
			out := apply(t, strict, rec("prov-1", 1, `{"temp":1}`), rec("prov-2", 1, `{"temp":1}`))
			if out[0].Reason != "thing prov-1 exists without a thing type" || out[1].Reason != "thing prov-2 exists with type meter" {
				t.Fatalf("without adoption: %+v", out)
			}
			adopt := newTestSink(t, f, Config{Ordered: ordered, AdoptThings: true})
			out = apply(t, adopt, rec("prov-1", 2, `{"temp":2}`), rec("prov-2", 2, `{"temp":2}`))
			if results(out) != "applied,applied" {
				t.Fatalf("adopted: %+v", out)
			}
			if f.things["prov-1"] != "" || f.things["prov-2"] != "meter" {
				t.Fatalf("types changed: %v", f.things)
			}
			for _, th := range []string{"prov-1", "prov-2"} {
				if !strings.Contains(f.state(th), `"temp":2`) {
					t.Fatalf("%s: %s", th, f.state(th))
				}
			}
			cp := f.controlPlane()
			if out := apply(t, adopt, rec("prov-1", 3, `{"temp":3}`), rec("prov-2", 3, `{"temp":3}`)); results(out) != "applied,applied" {
				t.Fatalf("again: %+v", out)
			}
			if f.controlPlane() != cp {
				t.Fatalf("control-plane calls for adopted things: %v", f)
			}
		})
	}
}

// TestOrderedPatch: in ordered mode a batch is one blind merge patch — values, null for
// deletions — and an object deleted and written again within the batch is cleared by an update
// of its own first, since a merge patch cannot drop members it does not name.
func TestOrderedPatch(t *testing.T) {
	f := newFakeAWS()
	s := newTestSink(t, f, Config{Ordered: true})
	apply(t, s, rec("dev", 1, `{"pos":{"lat":0,"lon":0,"x":9},"temp":1,"fw":"1"}`))
	updates := f.count("UpdateThingShadow")
	out := apply(t, s,
		rec("dev", 2, `{"pos":{"lat":1,"lon":2}}`),
		rec("dev", 3, `{"pos":null,"fw":null}`),
		rec("dev", 4, `{"pos":{"alt":5},"temp":2}`),
	)
	if results(out) != "applied,applied,applied" {
		t.Fatalf("%s", results(out))
	}
	if got := canon(t, f.state("dev")); got != canon(t, `{"pos":{"alt":5},"temp":2}`) {
		t.Fatalf("state %s", f.state("dev"))
	}
	if f.count("UpdateThingShadow") != updates+2 {
		t.Fatalf("calls %v", f)
	}
	// Without a replaced object: one update.
	apply(t, s, rec("dev", 5, `{"temp":3}`), rec("dev", 6, `{"pos":{"alt":6}}`))
	if f.count("UpdateThingShadow") != updates+3 || canon(t, f.state("dev")) != canon(t, `{"pos":{"alt":6},"temp":3}`) {
		t.Fatalf("%s %v", f.state("dev"), f)
	}
}
