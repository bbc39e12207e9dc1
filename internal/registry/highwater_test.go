package registry

import (
	"testing"

	"github.com/coapgw/coapgw/internal/processor"
)

// TestHighWater: the mark is the highest seq processed per gateway (applied, duplicate or set
// aside), survives a reopen, and a record above it is applied while one at or below it is a
// duplicate: what the gateway relies on when it raises a new spool's sequence past the mark.
func TestHighWater(t *testing.T) {
	e := newEnv(t, Options{})
	mark := func(gw string) uint64 {
		t.Helper()
		m, err := e.r.HighWater(gw)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := mark("gw1"); m != 0 {
		t.Fatalf("mark of an empty registry = %d", m)
	}
	e.send(rec("sensor", "dev-1", 1, `{"a":1}`), rec("sensor", "dev-1", 2, `{"b":2}`))
	bad := rec("other", "dev-1", 3, `{"c":3}`) // another type: set aside, still processed
	e.apply(e.batch(bad))
	if m := mark("gw1"); m != 3 {
		t.Fatalf("mark = %d, want 3", m)
	}
	if m := mark("gw2"); m != 0 {
		t.Fatalf("mark of another gateway = %d", m)
	}
	e.reopen()
	if m := mark("gw1"); m != 3 {
		t.Fatalf("mark after reopen = %d, want 3", m)
	}
	// A spool restarted at 1 would be dropped; one raised past the mark is applied.
	low := rec("sensor", "dev-1", 4, `{"d":4}`)
	low.Seq = 1
	if out := e.apply(e.batch(low)); out[0].Result != processor.Duplicate {
		t.Fatalf("seq 1 below the mark: %v", out[0].Result)
	}
	up := rec("sensor", "dev-1", 5, `{"e":5}`)
	up.Seq = mark("gw1") + 1
	if out := e.apply(e.batch(up)); out[0].Result != processor.Applied {
		t.Fatalf("seq above the mark: %v %s", out[0].Result, out[0].Reason)
	}
	if m := mark("gw1"); m != up.Seq {
		t.Fatalf("mark = %d, want %d", m, up.Seq)
	}
	e.r.Close()
	if _, err := e.r.HighWater("gw1"); err == nil {
		t.Fatal("HighWater after Close succeeded")
	}
}
