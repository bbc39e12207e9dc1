package awsiot

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/record"
)

// TestNewKeysNeverLost is TestAWSOutageUnderLoad's pattern in versioned mode, without SQS: one
// device's records, each with a key of its own, reach two consumers (each its own sink and cache)
// in batches of 1–4, in another order than received_at, with redeliveries of records already
// applied, and now and then one consumer writes in the middle of the other's write (between its
// classic and registry updates, or before a retry after a conflict). Every record acknowledged
// (applied or duplicate) must be in the shadow, and a key the shadow never held is never a
// duplicate.
func TestNewKeysNeverLost(t *testing.T) {
	f := newFakeAWS()
	sinks := [2]*Sink{newTestSink(t, f, Config{}), newTestSink(t, f, Config{})}
	rng := rand.New(rand.NewPCG(7, 24))
	const n = 120
	order := rng.Perm(n)
	next := 0
	written := map[int]bool{} // keys the shadow holds (by the outcomes)
	acked := map[int]bool{}
	check := func(idx []int, out []processor.Outcome) {
		t.Helper()
		for j, o := range out {
			i := idx[j]
			switch {
			case o.Result == processor.Duplicate && !written[i]:
				t.Fatalf("r%d reported duplicate, but no record with that key was written before", i)
			case o.Result != processor.Applied && o.Result != processor.Duplicate:
				t.Fatalf("r%d: %v %s", i, o.Result, o.Reason)
			}
			written[i], acked[i] = true, true
		}
	}
	batch := func(k int) ([]record.Record, []int) {
		var recs []record.Record
		var idx []int
		for ; k > 0 && next < n; k-- {
			i := order[next]
			next++
			recs, idx = append(recs, rec("dev", float64(i)/10, fmt.Sprintf(`{"r%d":1}`, i))), append(idx, i)
		}
		return recs, idx
	}
	for next < n {
		recs, idx := batch(1 + rng.IntN(4))
		if len(acked) > 0 && rng.IntN(2) == 0 { // a redelivery
			i := rng.IntN(n)
			for !acked[i] {
				i = (i + 1) % n
			}
			recs, idx = append(recs, rec("dev", float64(i)/10, fmt.Sprintf(`{"r%d":1}`, i))), append(idx, i)
		}
		c := rng.IntN(2)
		if rng.IntN(3) == 0 {
			at, calls := 1+rng.IntN(2), 0
			f.beforeUpdate = func(string) {
				if calls++; calls != at {
					return
				}
				f.beforeUpdate = nil
				orecs, oidx := batch(1)
				if len(orecs) > 0 {
					check(oidx, apply(t, sinks[1-c], orecs...))
				}
			}
		}
		check(idx, apply(t, sinks[c], recs...))
		f.beforeUpdate = nil
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(f.state("dev")), &got); err != nil {
		t.Fatal(err)
	}
	for i := range acked {
		if _, ok := got[fmt.Sprintf("r%d", i)]; !ok {
			t.Errorf("r%d acknowledged but not in the shadow", i)
		}
	}
	if len(acked) != n || len(got) != n {
		t.Errorf("%d records acknowledged, %d keys in the shadow, want %d", len(acked), len(got), n)
	}
	// The interleavings happened: each consumer met the other's writes (version conflicts).
	for k, s := range sinks {
		if c := testutil.ToFloat64(s.m.conflicts); c == 0 {
			t.Errorf("consumer %d had no version conflict: the test did not interleave the writers (calls %v)", k, f)
		}
	}
}
