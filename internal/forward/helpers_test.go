package forward

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// testRecord is record i of a test run.
func testRecord(i int, payload []byte) record.Record {
	if payload == nil {
		payload = fmt.Appendf(nil, `{"i":%d}`, i)
	}
	return record.Record{
		GW: "gw-test", ReceivedAt: t0.Add(time.Duration(i) * time.Millisecond), Type: "sensor",
		ID: fmt.Sprintf("dev-%d", i%17), ContentFormat: 50, Payload: payload, Peer: "127.0.0.1:5683",
	}
}

// appendRecords appends n records (payload(i) or a small JSON object) and waits until they are
// durable; it returns their sequence numbers.
func appendRecords(t testing.TB, sp spool.Log, from, n int, payload func(i int) []byte) []uint64 {
	t.Helper()
	seqs := make([]uint64, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	for k := range n {
		i := from + k
		var p []byte
		if payload != nil {
			p = payload(i)
		}
		rec := testRecord(i, p)
		b, err := record.Append(nil, &rec)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		if err := sp.Append(b, func(seq uint64, err error) {
			mu.Lock()
			seqs[k] = seq
			if err != nil && failed == nil {
				failed = err
			}
			mu.Unlock()
			wg.Done()
		}); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	wg.Wait()
	if failed != nil {
		t.Fatalf("append: %v", failed)
	}
	return seqs
}

// fakePub is a Publisher whose behaviour is a function of the call number and records.
type fakePub struct {
	maxBatch int
	fn       func(ctx context.Context, call int, recs []record.Record) ([]error, error)

	mu          sync.Mutex
	calls       int
	sizes       []int
	accepted    map[uint64]int // times each seq was accepted
	tried       map[uint64]int // times each seq was in a call
	inflight    int
	maxInflight int
}

func newFakePub(fn func(ctx context.Context, call int, recs []record.Record) ([]error, error)) *fakePub {
	if fn == nil {
		fn = func(context.Context, int, []record.Record) ([]error, error) { return nil, nil }
	}
	return &fakePub{maxBatch: 10, fn: fn, accepted: map[uint64]int{}, tried: map[uint64]int{}}
}

func (p *fakePub) MaxBatch() int { return p.maxBatch }

func (p *fakePub) Publish(ctx context.Context, recs []record.Record) ([]error, error) {
	p.mu.Lock()
	p.calls++
	call := p.calls
	p.sizes = append(p.sizes, len(recs))
	p.inflight++
	p.maxInflight = max(p.maxInflight, p.inflight)
	for _, r := range recs {
		p.tried[r.Seq]++
	}
	p.mu.Unlock()
	errs, err := p.fn(ctx, call, recs)
	p.mu.Lock()
	p.inflight--
	if err == nil {
		for i, r := range recs {
			if errs == nil || errs[i] == nil {
				p.accepted[r.Seq]++
			}
		}
	}
	p.mu.Unlock()
	return errs, err
}

func (p *fakePub) isAccepted(seq uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted[seq] > 0
}

func (p *fakePub) snapshot() (calls int, sizes []int, accepted, tried map[uint64]int, maxInflight int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, tr := map[uint64]int{}, map[uint64]int{}
	for k, v := range p.accepted {
		a[k] = v
	}
	for k, v := range p.tried {
		tr[k] = v
	}
	return p.calls, append([]int(nil), p.sizes...), a, tr, p.maxInflight
}

// checkSpool wraps a spool and checks, at every Commit, that every record at or below the new
// cursor was accepted by the publisher (or is listed in dropped) — the forwarder's core promise.
type checkSpool struct {
	spool.Log
	t       testing.TB
	pub     *fakePub
	seqs    []uint64 // every record appended, ascending
	dropped map[uint64]bool

	mu      sync.Mutex
	commits []uint64
}

func (s *checkSpool) Commit(seq uint64) error {
	for _, q := range s.seqs {
		if q > seq {
			break
		}
		if !s.pub.isAccepted(q) && !s.dropped[q] {
			s.t.Errorf("Commit(%d) while record %d was not accepted", seq, q)
		}
	}
	s.mu.Lock()
	s.commits = append(s.commits, seq)
	s.mu.Unlock()
	return s.Log.Commit(seq)
}

func (s *checkSpool) commitCalls() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.commits...)
}

// fakeClock is a clock whose Sleep returns at once, advancing Now.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	c.mu.Unlock()
	return ctx.Err()
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

// useFakeClock makes f use clk and a seeded random source.
func useFakeClock(f *Forwarder, clk *fakeClock, seed uint64) {
	f.now = clk.Now
	f.sleep = clk.Sleep
	rng := rand.New(rand.NewPCG(seed, seed+1))
	var mu sync.Mutex
	f.randN = func(n int64) int64 {
		mu.Lock()
		defer mu.Unlock()
		return rng.Int64N(n)
	}
}

// started runs f.Run in a goroutine; the returned function cancels it and returns Run's error.
func started(t testing.TB, f *Forwarder) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- f.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return within 30 s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func counter(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}
