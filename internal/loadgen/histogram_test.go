package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, 1<<40 - 1} {
		i := histIndex(v)
		lo, hi := histRange(i)
		if v < lo || v > hi {
			t.Errorf("value %d in bucket %d = [%d, %d]", v, i, lo, hi)
		}
		if i < prev {
			t.Errorf("bucket of %d (%d) before the previous (%d)", v, i, prev)
		}
		prev = i
		if hi-lo > lo/histSub {
			t.Errorf("bucket [%d, %d] wider than 1/%d", lo, hi, histSub)
		}
	}
	if i := histIndex(1 << 50); i != histBuckets-1 {
		t.Errorf("huge value in bucket %d, want the last (%d)", i, histBuckets-1)
	}
}

// TestHistogramQuantiles compares against exact percentiles of the same samples.
func TestHistogramQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var a, b histogram
	var all []int64
	for i := range 100_000 {
		// Log-normal-ish latencies from microseconds to seconds.
		v := int64(math.Exp(rng.NormFloat64()*1.5 + 12))
		all = append(all, v)
		if i%2 == 0 {
			a.record(v)
		} else {
			b.record(v)
		}
	}
	a.merge(&b)
	slices.Sort(all)
	if a.n != uint64(len(all)) || a.min != all[0] || a.max != all[len(all)-1] {
		t.Fatalf("n %d min %d max %d, want %d %d %d", a.n, a.min, a.max, len(all), all[0], all[len(all)-1])
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		exact := all[int(math.Ceil(q*float64(len(all))))-1]
		got := a.quantile(q)
		if math.Abs(float64(got-exact)) > float64(exact)/histSub+1 {
			t.Errorf("q%v = %d, exact %d: off by more than 1/%d", q, got, exact, histSub)
		}
	}
	var empty histogram
	if s := empty.summary(); s.Count != 0 || s.P99US != 0 {
		t.Errorf("empty summary %+v", s)
	}
}
