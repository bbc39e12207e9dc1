package awsiot

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// shapes are reported states of typical telemetry, for the cache's memory.
var shapes = map[string]func(i int) string{
	"20 numbers": func(i int) string {
		var b strings.Builder
		for p := range 20 {
			fmt.Fprintf(&b, `,"property_%02d":%d.5`, p, i*p)
		}
		return "{" + b.String()[1:] + "}"
	},
	"5 objects of 4 strings": func(i int) string {
		var b strings.Builder
		for o := range 5 {
			fmt.Fprintf(&b, `,"sensor%d":{"state":"ok-%d","unit":"celsius","model":"tx-200","serial":"%08d"}`, o, i, i)
		}
		return "{" + b.String()[1:] + "}"
	},
}

// TestThingCostEstimate: the cache's estimate of a thing's heap (thingCost) against the heap
// measured for thousands of cached things, for each shape, on both paths into the cache: a state
// read from a shadow (a cold cache) and a state merged from a batch and written. The estimate is
// at least 90 % of what was measured (so ThingCacheBytes bounds the heap) and at most 1.8 times it.
func TestThingCostEstimate(t *testing.T) {
	const n = 3000
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("thing-%06d", i)
	}
	for name, shape := range shapes {
		for _, path := range []string{"read", "write"} {
			t.Run(name+"/"+path, func(t *testing.T) {
				f := newFakeAWS()
				s := newTestSink(t, f, Config{ThingCacheSize: n, ThingCacheBytes: 1 << 40})
				s.now = fuzzSink().now
				payloads := make([][]byte, n)
				for i := range payloads {
					if path == "read" {
						payloads[i] = fmt.Appendf(nil, `{"state":{"reported":%s},"version":%d,"timestamp":1700000000}`, shape(i), i+1)
					} else {
						payloads[i] = []byte(shape(i))
					}
				}
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				for i, p := range payloads {
					if path == "read" {
						th, err := s.parseShadow(p)
						if err != nil {
							t.Fatal(err)
						}
						s.things.Add(names[i], th)
						continue
					}
					apply(t, s, rec(names[i], 1, string(p)))
					f.mu.Lock() // the fake's copy is not the cache's
					delete(f.shadows, names[i])
					delete(f.shadows, shadowKey(names[i], RegistryShadow))
					delete(f.things, names[i])
					f.mu.Unlock()
				}
				payloads = nil
				runtime.GC()
				runtime.ReadMemStats(&after)
				measured := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
				estimated := float64(s.CachedBytes()) / n
				t.Logf("%s, %s path: measured %.0f bytes per cached thing, estimated %.0f", name, path, measured, estimated)
				if r := estimated / measured; r < 0.9 || r > 1.8 {
					t.Fatalf("estimate %.0f vs measured %.0f bytes per thing", estimated, measured)
				}
				runtime.KeepAlive(s)
			})
		}
	}
}

// TestCacheBoundedByBytes: the cache holds no more than ThingCacheBytes of things, whatever
// its count bound; an evicted thing costs two GetThingShadow (its shadow and its registry
// shadow), never a control-plane call.
func TestCacheBoundedByBytes(t *testing.T) {
	f := newFakeAWS()
	s := newTestSink(t, f, Config{ThingCacheBytes: 30 << 10})
	for i := range 60 {
		apply(t, s, rec(fmt.Sprintf("dev-%d", i), 1, shapes["20 numbers"](i)))
	}
	if s.CachedBytes() > 30<<10 || s.CachedThings() >= 20 || s.CachedThings() < 5 {
		t.Fatalf("cached %d things, %d bytes", s.CachedThings(), s.CachedBytes())
	}
	cp, gets := f.controlPlane(), f.count("GetThingShadow")
	apply(t, s, rec("dev-0", 2, `{"property_00":1}`))
	if f.controlPlane() != cp || f.count("GetThingShadow") != gets+2 {
		t.Fatalf("evicted thing: %v", f)
	}
}

// TestStaleStampsReadAgain: a cold reader that finds the registry shadow's stamps written for an
// older version of the shadow than the one it read (a writer between its two updates) reads both
// again instead of falling back, so a record older than the newest write stays a duplicate.
func TestStaleStampsReadAgain(t *testing.T) {
	f := newFakeAWS()
	a := newTestSink(t, f, Config{})
	apply(t, a, rec("dev", 10, `{"x":1}`))
	f.mu.Lock()
	old, _ := json.Marshal(f.shadows["dev#coapgw"].reported)
	f.mu.Unlock()
	apply(t, a, rec("dev", 20, `{"x":2}`))
	f.mu.Lock()
	fresh := f.shadows["dev#coapgw"].reported
	var stale map[string]any
	_ = json.Unmarshal(old, &stale)
	f.shadows["dev#coapgw"].reported = stale // sv 1, the shadow at version 2
	f.mu.Unlock()
	reads := 0
	f.fail = func(op, thing string) error {
		if op == "GetThingShadow" && thing == "dev" {
			if reads++; reads == 3 { // the second read of the registry shadow: the writer is done
				f.mu.Lock()
				f.shadows["dev#coapgw"].reported = fresh
				f.mu.Unlock()
			}
		}
		return nil
	}
	b := newTestSink(t, f, Config{})
	if out := apply(t, b, rec("dev", 15, `{"x":9}`)); results(out) != "duplicate" {
		t.Fatalf("a record older than the newest write: %s, state %s", results(out), f.state("dev"))
	}
	if got := f.state("dev"); got != `{"x":2}` {
		t.Fatalf("state %s", got)
	}
}
