package loadgen

import (
	"math/bits"
	"time"
)

// histogram is a log-bucketed latency histogram in the manner of HdrHistogram: values below 128 ns
// are exact, larger ones fall into one of 128 linear sub-buckets per power of two, so a reported
// percentile is within 1/128 (0.8 %) of the true sample. Recording is a few instructions and never
// allocates; histograms of several workers are merged by adding counts.
type histogram struct {
	counts   [histBuckets]uint64
	n        uint64
	sum      int64
	min, max int64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	histMaxBits = 40 // values are clamped below 2^40 ns (about 18 minutes)
	histBuckets = histSub + (histMaxBits-histSubBits)*histSub
)

func histIndex(v int64) int {
	if v < histSub {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	if v >= 1<<histMaxBits {
		v = 1<<histMaxBits - 1
	}
	shift := bits.Len64(uint64(v)) - histSubBits - 1
	return histSub + shift*histSub + int(v>>shift) - histSub
}

// histRange is the inclusive range of values recorded in bucket i.
func histRange(i int) (lo, hi int64) {
	if i < histSub {
		return int64(i), int64(i)
	}
	shift := (i - histSub) / histSub
	top := int64((i-histSub)%histSub + histSub)
	return top << shift, (top+1)<<shift - 1
}

func (h *histogram) record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[histIndex(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += v
}

func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// quantile returns the value at quantile q (0..1): the midpoint of the bucket holding the
// ceil(q*n)-th smallest sample, clamped to the observed min and max.
func (h *histogram) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.999999999)
	if rank < 1 {
		rank = 1
	}
	if rank > h.n {
		rank = h.n
	}
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			lo, hi := histRange(i)
			v := lo + (hi-lo)/2
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}

// LatencySummary is a latency distribution in microseconds.
type LatencySummary struct {
	Count  uint64  `json:"count"`
	MinUS  float64 `json:"min_us"`
	MeanUS float64 `json:"mean_us"`
	P50US  float64 `json:"p50_us"`
	P90US  float64 `json:"p90_us"`
	P99US  float64 `json:"p99_us"`
	P999US float64 `json:"p999_us"`
	MaxUS  float64 `json:"max_us"`
}

func (h *histogram) summary() LatencySummary {
	if h.n == 0 {
		return LatencySummary{}
	}
	us := func(ns int64) float64 { return float64(ns) / float64(time.Microsecond) }
	return LatencySummary{
		Count:  h.n,
		MinUS:  us(h.min),
		MeanUS: float64(h.sum) / float64(h.n) / float64(time.Microsecond),
		P50US:  us(h.quantile(0.50)),
		P90US:  us(h.quantile(0.90)),
		P99US:  us(h.quantile(0.99)),
		P999US: us(h.quantile(0.999)),
		MaxUS:  us(h.max),
	}
}
