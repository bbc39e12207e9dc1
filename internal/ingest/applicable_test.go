package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeRegistry is a Registry whose shadows are the records of sp up to the sequence number the
// test says the processor has applied (applied), merged as the registry merges them, on top of
// the states it starts with (shadows).
type fakeRegistry struct {
	things  []KnownThing
	err     error // from Things
	sp      *fakeSpool
	shadows map[string]string // thing → reported state at start

	mu        sync.Mutex
	applied   int    // records of sp applied
	reads     int    // State calls
	processed uint64 // Processed's answer
}

func (f *fakeRegistry) Things() ([]KnownThing, error) { return f.things, f.err }
func (f *fakeRegistry) Processed() (uint64, error)    { return f.processed, nil }

func (f *fakeRegistry) State(_ context.Context, thing string) (*processor.Doc, error) {
	return f.shadow(thing)
}

// countProps counts the properties of d from its rendered state: every member whose value is not
// an object (an oracle independent of the registry's count over the tree).
func countProps(d *processor.Doc) int {
	var state map[string]any
	if err := json.Unmarshal(d.AppendState(nil), &state); err != nil {
		panic(err)
	}
	var count func(m map[string]any) int
	count = func(m map[string]any) int {
		n := 0
		for _, v := range m {
			if o, ok := v.(map[string]any); ok {
				n += count(o)
			} else {
				n++
			}
		}
		return n
	}
	return count(state)
}

func (f *fakeRegistry) shadow(thing string) (*processor.Doc, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	d := processor.NewDoc()
	if s, ok := f.shadows[thing]; ok {
		p, err := processor.DecodeJSON([]byte(s), 1)
		if err != nil {
			return nil, err
		}
		d.Merge(p)
	}
	if f.sp == nil {
		return d, nil
	}
	f.sp.mu.Lock()
	defer f.sp.mu.Unlock()
	for _, b := range f.sp.data[:f.applied] {
		var rec record.Record
		if err := record.Decode(b, &rec); err != nil {
			return nil, err
		}
		if rec.ID != thing {
			continue
		}
		p, err := processor.DecodeJSON(rec.Payload, rec.ReceivedAt.UnixNano())
		if err != nil {
			return nil, err
		}
		d.Merge(p)
	}
	return d, nil
}

// apply makes the fake processor apply every stored record, and tells the handler.
func (f *fakeRegistry) apply(h *Handler) {
	n := f.sp.stored()
	f.mu.Lock()
	f.applied = n
	f.mu.Unlock()
	h.Processed(uint64(n))
}

func (f *fakeRegistry) shadowReads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// newLocalRig is a rig in local mode: a Registry over its own spool.
func newLocalRig(t *testing.T, cfg Config, reg *fakeRegistry) *rig {
	t.Helper()
	sp := &fakeSpool{}
	reg.sp = sp
	cfg.GatewayID, cfg.Registry = "gw-test", reg
	return newRigSpool(t, cfg, sp)
}

// TestTypeConflict (issue 11, finding 5): in local mode a record naming a thing under another
// type than the one it exists with — in the registry at start, or since its first record —
// gets 4.00 "thing X exists with type Y" and nothing is stored; on main it got 2.04 and the
// registry set it aside.
func TestTypeConflict(t *testing.T) {
	reg := &fakeRegistry{things: []KnownThing{{"dev-1", "sensor"}}}
	r := newLocalRig(t, Config{}, reg)
	steps := []struct {
		typ, id string
		code    coapmsg.Code
		diag    string
	}{
		{"meter", "dev-1", coapmsg.BadRequest, "thing dev-1 exists with type sensor"},
		{"sensor", "dev-1", coapmsg.Changed, ""},
		{"meter", "dev-2", coapmsg.Changed, ""},
		{"sensor", "dev-2", coapmsg.BadRequest, "thing dev-2 exists with type meter"},
		{"meter", "dev-2", coapmsg.Changed, ""},
	}
	for _, s := range steps {
		resp := r.do(coapmsg.POST, pathOpts(s.typ, s.id), `{"t":1}`)
		if resp.Code != s.code || string(resp.Payload) != s.diag {
			t.Fatalf("/%s/%s: %v %q, want %v %q", s.typ, s.id, resp.Code, resp.Payload, s.code, s.diag)
		}
	}
	if n := r.sp.stored(); n != 3 {
		t.Fatalf("%d records stored, want 3", n)
	}
	if c := testutil.ToFloat64(r.h.results[resTypeConflict]); c != 2 {
		t.Fatalf("type_conflict counter = %v, want 2", c)
	}
}

// TestShadowTwoPosts (issue 11, finding 5): two 7 KB posts with different properties for one
// thing would merge past the 8 KB shadow limit. The second is never acknowledged: while the
// first is not applied it gets 5.03 "thing busy" (Max-Age 1), once it is, 4.13 with the size in
// the diagnostic and the room left in Size1; nothing of it is stored. A 7 KB post replacing the
// same property fits and gets 2.04.
func TestShadowTwoPosts(t *testing.T) {
	reg := &fakeRegistry{}
	r := newLocalRig(t, Config{MaxPayload: 16384}, reg)
	big := func(key string) string { return `{"` + key + `":"` + strings.Repeat("x", 7000) + `"}` }
	if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), big("a")); resp.Code != coapmsg.Changed {
		t.Fatalf("first: %v %q, want 2.04", resp.Code, resp.Payload)
	}
	resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), big("b"))
	if resp.Code != coapmsg.ServiceUnavailable || string(resp.Payload) != "thing busy, send again" || maxAge(t, resp) != 1 {
		t.Fatalf("second, first not applied: %v %q, want 5.03 \"thing busy, send again\" with Max-Age 1", resp.Code, resp.Payload)
	}
	reg.apply(r.h)
	resp = r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), big("b"))
	if resp.Code != coapmsg.RequestEntityTooLarge || string(resp.Payload) != "shadow would be 14015 bytes, over 8192" {
		t.Fatalf("second, first applied: %v %q, want 4.13 \"shadow would be 14015 bytes, over 8192\"", resp.Code, resp.Payload)
	}
	if v, _ := resp.Option(coapmsg.Size1); len(v) != 2 || int(v[0])<<8|int(v[1]) != 8192-7008 {
		t.Fatalf("Size1 = %x, want %d (the room left)", v, 8192-7008)
	}
	if n := r.sp.stored(); n != 1 {
		t.Fatalf("%d records stored, want 1", n)
	}
	if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), big("a")); resp.Code != coapmsg.Changed {
		t.Fatalf("replacing the property: %v %q, want 2.04", resp.Code, resp.Payload)
	}
	if c := testutil.ToFloat64(r.h.results[resShadowLimit]); c != 1 {
		t.Fatalf("shadow_limit counter = %v, want 1", c)
	}
}

// TestShadowKnownAtStart: a thing whose stored shadow is almost full is judged exactly on its
// first record since the start.
func TestShadowKnownAtStart(t *testing.T) {
	reg := &fakeRegistry{things: []KnownThing{{"dev-1", "sensor"}},
		shadows: map[string]string{"dev-1": `{"a":"` + strings.Repeat("x", 8000) + `"}`}}
	r := newLocalRig(t, Config{}, reg)
	if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), `{"b":"`+strings.Repeat("y", 300)+`"}`); resp.Code != coapmsg.RequestEntityTooLarge {
		t.Fatalf("%v %q, want 4.13", resp.Code, resp.Payload)
	}
	if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), `{"a":null,"b":1}`); resp.Code != coapmsg.Changed {
		t.Fatalf("a deletion: %v %q, want 2.04", resp.Code, resp.Payload)
	}
}

// TestShadowFastPath: records that fit under the thing's bounds cost no registry read; the
// registry is read once the bounds are used up, and the exact state resets them.
func TestShadowFastPath(t *testing.T) {
	reg := &fakeRegistry{}
	r := newLocalRig(t, Config{}, reg)
	payload := `{"temp":21.5,"hum":40,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxx"}`
	n := 8192 / len(payload) // posts that fit under the bound of a new thing
	for i := range n {
		if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), payload); resp.Code != coapmsg.Changed {
			t.Fatalf("post %d: %v %q", i, resp.Code, resp.Payload)
		}
	}
	if n := reg.shadowReads(); n != 0 {
		t.Fatalf("%d registry reads, want 0", n)
	}
	if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), payload); resp.Code != coapmsg.ServiceUnavailable {
		t.Fatalf("post past the bound, records not applied: %v %q, want 5.03", resp.Code, resp.Payload)
	}
	reg.apply(r.h)
	// The first post reads the state (one payload's worth: the same properties each time), and
	// n-2 more fit under the bound again.
	for i := range n - 1 {
		if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), payload); resp.Code != coapmsg.Changed {
			t.Fatalf("post %d after the bound: %v %q", i, resp.Code, resp.Payload)
		}
	}
	if n := reg.shadowReads(); n != 1 {
		t.Fatalf("%d registry reads, want 1", n)
	}
}

// TestMaxProperties: with --max-properties 5 a record that would give the thing a sixth
// property gets 4.13 and is not stored; one that replaces and adds within the cap gets 2.04.
func TestMaxProperties(t *testing.T) {
	reg := &fakeRegistry{}
	r := newLocalRig(t, Config{MaxProperties: 5}, reg)
	post := func(payload string) *coapmsg.Message {
		return r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), payload)
	}
	if resp := post(`{"a":1,"b":2,"c":{"d":3}}`); resp.Code != coapmsg.Changed {
		t.Fatalf("3 properties: %v %q", resp.Code, resp.Payload)
	}
	reg.apply(r.h)
	if resp := post(`{"e":4,"f":5,"g":6}`); resp.Code != coapmsg.RequestEntityTooLarge || string(resp.Payload) != "thing would have 6 properties, over 5" {
		t.Fatalf("a sixth property: %v %q, want 4.13", resp.Code, resp.Payload)
	}
	if resp := post(`{"a":9,"e":4,"f":[1,2,3]}`); resp.Code != coapmsg.Changed {
		t.Fatalf("5 properties: %v %q", resp.Code, resp.Payload)
	}
	if n, c := r.sp.stored(), testutil.ToFloat64(r.h.results[resPropertyLimit]); n != 2 || c != 1 {
		t.Fatalf("stored %d (want 2), property_limit %v (want 1)", n, c)
	}
	for i := range 5 { // a new thing may have 5, not 6
		if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-2"), fmt.Sprintf(`{"p%d":%d}`, i, i)); resp.Code != coapmsg.Changed {
			t.Fatalf("dev-2 property %d: %v %q", i, resp.Code, resp.Payload)
		}
	}
	reg.apply(r.h)
	if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-2"), `{"p5":5}`); resp.Code != coapmsg.RequestEntityTooLarge {
		t.Fatalf("dev-2 sixth property: %v %q, want 4.13", resp.Code, resp.Payload)
	}
}

// benchRegistry is a Registry for benchmarks: dev-1 exists, its state is the benchmark's payload
// (the same properties each time) and, if extra, 5 KB more.
type benchRegistry struct{ extra bool }

func (benchRegistry) Things() ([]KnownThing, error) { return []KnownThing{{"dev-1", "sensor"}}, nil }
func (benchRegistry) Processed() (uint64, error)    { return 0, nil }
func (b benchRegistry) State(context.Context, string) (*processor.Doc, error) {
	state := `{"temp":21.5,"hum":40,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxx"`
	if b.extra {
		state += `,"extra":"` + strings.Repeat("x", 5000) + `"`
	}
	return processor.DecodeJSON([]byte(state+"}"), 1)
}

// BenchmarkServeCoAPLocal is BenchmarkServeCoAP in local mode: the thing's type is checked and
// its shadow budget kept (two additions a request, and an exact decision — a registry read,
// here a fake one — each time the bounds are used up, about every 150 requests).
func BenchmarkServeCoAPLocal(b *testing.B) {
	benchServeCoAP(b, Config{GatewayID: "gw", MaxThings: 100_000, MaxProperties: 256, Registry: benchRegistry{}})
}

// BenchmarkServeCoAPLocalModel is BenchmarkServeCoAPLocal for a thing whose state (5 KB) is past
// half the limit: every record is decoded and merged into the thing's model.
func BenchmarkServeCoAPLocalModel(b *testing.B) {
	benchServeCoAP(b, Config{GatewayID: "gw", MaxThings: 100_000, MaxProperties: 256, Registry: benchRegistry{extra: true}})
}

// FuzzBudgetBound: the shadow budget's premise. For a record b the device API accepts, merged
// into a state built from a record a it accepts, whichever is newer, the state grows by at most
// b's estimate: bytes by len(b) + 4 per backslash, properties by b's count of ':'.
func FuzzBudgetBound(f *testing.F) {
	for _, s := range [][2]string{
		{`{"a":{"b":1}}`, `{"a":{"c":2}}`},
		{`{"a":1}`, `{"a":{"b":{"c":[1,2]}},"d":null}`},
		{`{"x":"s"}`, `{"\b\f":1,"\u0001":2}`},
		{`{"a":{"b":1,"c":2}}`, `{"a":null}`},
		{`{}`, `{"é":"\u00e9","\/":true}`},
		{`{"a":[1,2]}`, `{"a":{"b":[{"c":1}]}}`},
	} {
		f.Add([]byte(s[0]), []byte(s[1]), true)
	}
	f.Fuzz(func(t *testing.T, a, b []byte, bNewer bool) {
		if checkJSONObject(a, 6) != nil || checkJSONObject(b, 6) != nil {
			return
		}
		ta, tb := int64(2), int64(3)
		if !bNewer {
			ta, tb = tb, ta
		}
		d, err := processor.DecodeJSON(a, ta)
		if err != nil {
			t.Fatalf("decode %q: %v", a, err)
		}
		rec, err := processor.DecodeJSON(b, tb)
		if err != nil {
			t.Fatalf("decode %q: %v", b, err)
		}
		size0, props0 := d.Size(), countProps(d)
		d.Merge(rec)
		size1, props1 := d.Size(), countProps(d)
		if maxSize := size0 + len(b) + 4*bytes.Count(b, backslash); size1 > maxSize {
			t.Fatalf("%s then %s: %d bytes, over the bound %d", a, b, size1, maxSize)
		}
		if maxProps := props0 + bytes.Count(b, colon); props1 > maxProps {
			t.Fatalf("%s then %s: %d properties, over the bound %d", a, b, props1, maxProps)
		}
	})
}

// TestShadowStartPending: records stored before the start and not yet processed (the spool's
// next sequence number 10, the registry at 5, 4 records in the spool) may belong to any thing:
// until the processor has caught up, a known thing and a new one get 5.03 "thing busy" when
// their first record needs an exact decision (always, their state being unknown); then 2.04.
// Sequence numbers may skip: the spool found empty is caught up too.
func TestShadowStartPending(t *testing.T) {
	for _, catchUp := range []string{"processed", "spool empty"} {
		t.Run(catchUp, func(t *testing.T) {
			reg := &fakeRegistry{things: []KnownThing{{"dev-1", "sensor"}}, processed: 5}
			sp := &fakeSpool{}
			var depth atomic.Int64
			depth.Store(4)
			sp.stats = func() spool.Stats { return spool.Stats{NextSeq: 10, Depth: depth.Load()} }
			reg.sp = sp
			r := newRigSpool(t, Config{GatewayID: "gw-test", Registry: reg}, sp)
			for _, id := range []string{"dev-1", "dev-2"} {
				if resp := r.do(coapmsg.POST, pathOpts("sensor", id), `{"t":1}`); resp.Code != coapmsg.ServiceUnavailable {
					t.Fatalf("%s before the processor caught up: %v %q, want 5.03", id, resp.Code, resp.Payload)
				}
			}
			if catchUp == "processed" {
				r.h.Processed(9)
			} else {
				depth.Store(0)
			}
			for _, id := range []string{"dev-1", "dev-2", "dev-3"} {
				if resp := r.do(coapmsg.POST, pathOpts("sensor", id), `{"t":1}`); resp.Code != coapmsg.Changed {
					t.Fatalf("%s after: %v %q, want 2.04", id, resp.Code, resp.Payload)
				}
			}
			if n := reg.shadowReads(); n != 2 { // dev-1 and dev-2 were unknown; dev-3 is new
				t.Fatalf("%d registry reads, want 2", n)
			}
		})
	}
}

// TestShadowModel: a thing past half the size limit keeps its state in memory after an exact
// decision, so that its next records are decided exactly without waiting for the processor or
// reading the registry: posts replacing a property keep getting 2.04 while nothing is applied,
// and one that would pass 8 KB gets 4.13. A failed append drops the model; the state is read
// again once the processor has caught up.
func TestShadowModel(t *testing.T) {
	reg := &fakeRegistry{things: []KnownThing{{"dev-1", "sensor"}},
		shadows: map[string]string{"dev-1": `{"a":"` + strings.Repeat("x", 6000) + `"}`}}
	r := newLocalRig(t, Config{}, reg)
	post := func(payload string) *coapmsg.Message { return r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), payload) }
	for i := range 10 {
		if resp := post(`{"b":"` + strings.Repeat(string(rune('a'+i)), 1500) + `"}`); resp.Code != coapmsg.Changed {
			t.Fatalf("post %d: %v %q, want 2.04", i, resp.Code, resp.Payload)
		}
	}
	if resp := post(`{"c":"` + strings.Repeat("y", 1000) + `"}`); resp.Code != coapmsg.RequestEntityTooLarge {
		t.Fatalf("past 8 KB: %v %q, want 4.13", resp.Code, resp.Payload)
	}
	if n := reg.shadowReads(); n != 1 {
		t.Fatalf("%d registry reads, want 1", n)
	}
	if got := r.h.shadows.models.Load(); got != 1 {
		t.Fatalf("%d models, want 1", got)
	}
	r.sp.mu.Lock()
	r.sp.err = errors.New("disk on fire")
	r.sp.mu.Unlock()
	if resp := post(`{"b":"q"}`); resp.Code != coapmsg.ServiceUnavailable {
		t.Fatalf("failed append: %v %q, want 5.03", resp.Code, resp.Payload)
	}
	r.sp.mu.Lock()
	r.sp.err = nil
	r.sp.mu.Unlock()
	if got := r.h.shadows.models.Load(); got != 0 {
		t.Fatalf("%d models after a failed append, want 0", got)
	}
	if resp := post(`{"b":"r"}`); resp.Code != coapmsg.ServiceUnavailable || string(resp.Payload) != "thing busy, send again" {
		t.Fatalf("model dropped, records not applied: %v %q, want 5.03 busy", resp.Code, resp.Payload)
	}
	reg.apply(r.h)
	if resp := post(`{"b":"s"}`); resp.Code != coapmsg.Changed {
		t.Fatalf("after the processor caught up: %v %q, want 2.04", resp.Code, resp.Payload)
	}
	if n := reg.shadowReads(); n != 2 {
		t.Fatalf("%d registry reads, want 2", n)
	}
}

// TestShadowSeedKeys: with --seed-shadow the processor adds online, uuid and type to a thing's
// reported state, so the device API counts them: a first record that fits 8 KB alone but not
// with those keys gets 4.13 (before, 2.04, and the registry set it aside); a smaller one gets
// 2.04; a record that fits only without the keys is refused on a known thing too, after one
// exact read.
func TestShadowSeedKeys(t *testing.T) {
	reg := &fakeRegistry{}
	r := newLocalRig(t, Config{SeedShadow: true}, reg)
	// {"a":"x…"} renders to n+8 bytes: 8,172 alone, 8,172 + 47 with the seed keys of sensor/dev-1.
	tooBig := `{"a":"` + strings.Repeat("x", 8164) + `"}`
	resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), tooBig)
	if resp.Code != coapmsg.RequestEntityTooLarge || !strings.HasPrefix(string(resp.Payload), "shadow would be ") {
		t.Fatalf("first record, 8,172 bytes + seed keys: %v %q, want 4.13", resp.Code, resp.Payload)
	}
	// The same again: still refused (the refusal must not leave the keys uncounted).
	if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), tooBig); resp.Code != coapmsg.RequestEntityTooLarge {
		t.Fatalf("again: %v %q, want 4.13", resp.Code, resp.Payload)
	}
	if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), `{"a":"`+strings.Repeat("x", 8000)+`"}`); resp.Code != coapmsg.Changed {
		t.Fatalf("8,008 bytes + seed keys: %v %q, want 2.04", resp.Code, resp.Payload)
	}
	if n := r.sp.stored(); n != 1 {
		t.Fatalf("%d records stored, want 1", n)
	}
	// Without the option the first record fits.
	plain := newLocalRig(t, Config{}, &fakeRegistry{})
	if resp := plain.do(coapmsg.POST, pathOpts("sensor", "dev-1"), tooBig); resp.Code != coapmsg.Changed {
		t.Fatalf("without --seed-shadow: %v %q, want 2.04", resp.Code, resp.Payload)
	}
}
