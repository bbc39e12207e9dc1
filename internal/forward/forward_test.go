package forward

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
	"github.com/prometheus/client_golang/prometheus"
)

func newMemory(t testing.TB) *spool.Memory {
	mem := spool.NewMemory(spool.Options{})
	t.Cleanup(func() { mem.Close() })
	return mem
}

func TestForwardsEverythingOnce(t *testing.T) {
	mem := newMemory(t)
	seqs := appendRecords(t, mem, 0, 1000, nil)
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(1, 2))
	pub := newFakePub(func(ctx context.Context, call int, recs []record.Record) ([]error, error) {
		mu.Lock()
		d := time.Duration(rng.IntN(2000)) * time.Microsecond // completions in random order
		mu.Unlock()
		time.Sleep(d)
		return nil, nil
	})
	sp := &checkSpool{Log: mem, t: t, pub: pub, seqs: seqs}
	reg := prometheus.NewRegistry()
	f, err := New(Config{CommitInterval: time.Millisecond}, sp, pub, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	stop := started(t, f)
	last := seqs[len(seqs)-1]
	waitFor(t, "the cursor at the last record", 20*time.Second, func() bool { return mem.Stats().CommittedSeq == last })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	calls, sizes, accepted, _, maxInflight := pub.snapshot()
	for _, s := range seqs {
		if accepted[s] != 1 {
			t.Fatalf("record %d accepted %d times", s, accepted[s])
		}
	}
	if slices.Max(sizes) > 10 {
		t.Errorf("a batch of %d records; the publisher allows 10", slices.Max(sizes))
	}
	// A backlog is read in whole batches: 1000 records, 100 full calls.
	if calls != 100 {
		t.Errorf("%d Publish calls for 1000 records, want 100 (batch sizes %v)", calls, sizes)
	}
	if maxInflight > 4 || maxInflight < 2 {
		t.Errorf("max calls in flight = %d, want 2..4 (Concurrency 4)", maxInflight)
	}
	if got := counter(t, reg, "coapgw_forward_records_total", "result", "sent"); got != 1000 {
		t.Errorf("sent = %v, want 1000", got)
	}
	for _, r := range []string{"retried", "failed"} {
		if got := counter(t, reg, "coapgw_forward_records_total", "result", r); got != 0 {
			t.Errorf("%s = %v, want 0", r, got)
		}
	}
	if got := counter(t, reg, "coapgw_forward_batches_total"); got != float64(calls) {
		t.Errorf("batches_total = %v, want %d", got, calls)
	}
	if got := counter(t, reg, "coapgw_forward_batch_seconds"); got != float64(calls) {
		t.Errorf("batch_seconds count = %v, want %d", got, calls)
	}
	if got := counter(t, reg, "coapgw_forward_pending_records"); got != 0 {
		t.Errorf("pending = %v after everything was sent", got)
	}
	commits := sp.commitCalls()
	if !slices.IsSorted(commits) || commits[len(commits)-1] != last {
		t.Errorf("commits not increasing up to %d: %v", last, commits)
	}
	if st := f.Stats(); st.Committed != last || st.Pending != 0 || st.Lag != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

// Three batches complete in reverse order: the cursor must not move until the first is accepted.
func TestCommitsOnlyTheContiguousPrefix(t *testing.T) {
	mem := newMemory(t)
	seqs := appendRecords(t, mem, 0, 30, nil)
	gates := map[uint64]chan struct{}{seqs[0]: make(chan struct{}), seqs[10]: make(chan struct{}), seqs[20]: make(chan struct{})}
	pub := newFakePub(func(ctx context.Context, call int, recs []record.Record) ([]error, error) {
		g, ok := gates[recs[0].Seq]
		if !ok || len(recs) != 10 {
			return nil, fmt.Errorf("unexpected batch starting at %d of %d records", recs[0].Seq, len(recs))
		}
		<-g
		return nil, nil
	})
	sp := &checkSpool{Log: mem, t: t, pub: pub, seqs: seqs}
	f, err := New(Config{Concurrency: 3, Linger: -1, CommitInterval: time.Millisecond}, sp, pub, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := started(t, f)
	waitFor(t, "three calls in flight", 5*time.Second, func() bool { c, _, _, _, _ := pub.snapshot(); return c == 3 })

	accepted := make(chan uint64, len(seqs))
	for _, s := range seqs {
		if err := f.OnAccepted(s, func(err error) {
			if err != nil {
				t.Errorf("record %d: %v", s, err)
			}
			accepted <- s
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitAccepted := func(n int) {
		for range n {
			select {
			case <-accepted:
			case <-time.After(5 * time.Second):
				t.Fatal("OnAccepted callbacks did not come")
			}
		}
	}
	close(gates[seqs[20]])
	waitAccepted(10)
	close(gates[seqs[10]])
	waitAccepted(10)
	time.Sleep(50 * time.Millisecond) // give a wrong implementation time to commit
	if c := mem.Stats().CommittedSeq; c != 0 {
		t.Fatalf("cursor moved to %d while records %d..%d were in flight", c, seqs[0], seqs[9])
	}
	if c := sp.commitCalls(); len(c) != 0 {
		t.Fatalf("Commit called (%v) while the first batch was in flight", c)
	}
	close(gates[seqs[0]])
	waitAccepted(10)
	waitFor(t, "the cursor at the last record", 5*time.Second, func() bool { return mem.Stats().CommittedSeq == seqs[29] })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// One record fails inside its batch (a server fault) three times: it is retried on its own, the
// others are not sent again, and the cursor waits for it.
func TestRetriesFailedEntriesAlone(t *testing.T) {
	mem := newMemory(t)
	seqs := appendRecords(t, mem, 0, 50, nil)
	bad := seqs[4]
	var mu sync.Mutex
	var badCalls [][]uint64
	var cursorWhileBad []uint64
	pub := newFakePub(nil)
	pub.fn = func(ctx context.Context, call int, recs []record.Record) ([]error, error) {
		var errs []error
		for i, r := range recs {
			if r.Seq != bad {
				continue
			}
			mu.Lock()
			ids := make([]uint64, len(recs))
			for k := range recs {
				ids[k] = recs[k].Seq
			}
			badCalls = append(badCalls, ids)
			n := len(badCalls)
			cursorWhileBad = append(cursorWhileBad, mem.Stats().CommittedSeq)
			mu.Unlock()
			if n <= 3 {
				errs = make([]error, len(recs))
				errs[i] = errors.New("InternalError (server fault)")
			}
		}
		return errs, nil
	}
	sp := &checkSpool{Log: mem, t: t, pub: pub, seqs: seqs}
	reg := prometheus.NewRegistry()
	f, err := New(Config{Linger: -1, CommitInterval: time.Millisecond, BackoffBase: 100 * time.Millisecond}, sp, pub, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{now: t0}
	useFakeClock(f, clk, 7)
	stop := started(t, f)
	waitFor(t, "the cursor at the last record", 10*time.Second, func() bool { return mem.Stats().CommittedSeq == seqs[49] })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	_, _, accepted, tried, _ := pub.snapshot()
	for _, s := range seqs {
		if accepted[s] != 1 {
			t.Errorf("record %d accepted %d times", s, accepted[s])
		}
		if s != bad && tried[s] != 1 {
			t.Errorf("record %d sent %d times; only the failed one may be sent again", s, tried[s])
		}
	}
	if len(badCalls) != 4 {
		t.Fatalf("the failing record was sent %d times, want 4", len(badCalls))
	}
	for i, ids := range badCalls[1:] {
		if len(ids) != 1 {
			t.Errorf("retry %d sent %v; want the record alone", i+1, ids)
		}
	}
	for i, c := range cursorWhileBad {
		if c >= bad {
			t.Errorf("attempt %d: cursor %d already past the unaccepted record %d", i, c, bad)
		}
	}
	// Each retry waited a full-jitter backoff: up to 100, 200, 400 ms.
	sleeps := clk.Sleeps()
	if len(sleeps) != 3 {
		t.Fatalf("sleeps = %v, want 3", sleeps)
	}
	for i, d := range sleeps {
		if ceil := 100 * time.Millisecond << i; d < 0 || d > ceil {
			t.Errorf("retry %d waited %v, want [0, %v]", i+1, d, ceil)
		}
	}
	if got := counter(t, reg, "coapgw_forward_records_total", "result", "retried"); got != 3 {
		t.Errorf("retried = %v, want 3", got)
	}
}

// A record the queue rejects is tried alone MaxRejects times, then dropped; a batch rejected as a
// whole is split so the other records get through; a spool entry that is not a record is dropped.
func TestRejectedRecordsAreDroppedNotBlocking(t *testing.T) {
	mem := newMemory(t)
	seqs := appendRecords(t, mem, 0, 20, nil)
	bad := seqs[3]
	var garbage uint64
	var wg sync.WaitGroup
	wg.Add(1)
	if err := mem.Append([]byte{0xde, 0xad, 0xbe, 0xef}, func(seq uint64, err error) { garbage = seq; wg.Done() }); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	seqs = append(seqs, appendRecords(t, mem, 20, 5, nil)...)
	all := append(slices.Clone(seqs), garbage)
	slices.Sort(all)

	pub := newFakePub(func(ctx context.Context, call int, recs []record.Record) ([]error, error) {
		for _, r := range recs {
			if r.Seq != bad {
				continue
			}
			if len(recs) > 1 {
				return nil, fmt.Errorf("%w: BatchRequestTooLong", ErrRejected)
			}
			return []error{fmt.Errorf("%w: InvalidMessageContents (sender fault)", ErrRejected)}, nil
		}
		return nil, nil
	})
	sp := &checkSpool{Log: mem, t: t, pub: pub, seqs: all, dropped: map[uint64]bool{bad: true, garbage: true}}
	reg := prometheus.NewRegistry()
	f, err := New(Config{Linger: -1, CommitInterval: time.Millisecond}, sp, pub, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	useFakeClock(f, &fakeClock{now: t0}, 3)
	stop := started(t, f)
	waitFor(t, "the cursor at the last record", 10*time.Second, func() bool { return mem.Stats().CommittedSeq == all[len(all)-1] })

	outcome := func(seq uint64) error {
		ch := make(chan error, 1)
		if err := f.OnAccepted(seq, func(err error) { ch <- err }); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-ch:
			return err
		default:
			t.Fatalf("OnAccepted(%d) for a resolved record did not call back at once", seq)
			return nil
		}
	}
	if err := outcome(bad); !errors.Is(err, ErrRejected) {
		t.Errorf("outcome of the rejected record: %v", err)
	}
	if err := outcome(garbage); !errors.Is(err, ErrRejected) {
		t.Errorf("outcome of the invalid entry: %v", err)
	}
	if err := outcome(seqs[0]); err != nil {
		t.Errorf("outcome of an accepted record: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	_, _, accepted, tried, _ := pub.snapshot()
	for _, s := range seqs {
		if s != bad && accepted[s] != 1 {
			t.Errorf("record %d accepted %d times", s, accepted[s])
		}
	}
	if tried[bad] != 4 { // once in its batch, then alone MaxRejects (3) times
		t.Errorf("rejected record tried %d times, want 4", tried[bad])
	}
	if got := counter(t, reg, "coapgw_forward_records_total", "result", "failed"); got != 2 {
		t.Errorf("failed = %v, want 2", got)
	}
	if got := counter(t, reg, "coapgw_forward_call_errors_total", "kind", "rejected"); got != 1 {
		t.Errorf("call_errors{rejected} = %v, want 1", got)
	}
}

// Whole calls fail (outage, then throttling): the forwarder backs off with full jitter, one call
// at a time, and recovers without losing or duplicating anything.
func TestBacksOffWithJitterOnThrottlingAndOutage(t *testing.T) {
	mem := newMemory(t)
	seqs := appendRecords(t, mem, 0, 100, nil)
	var pub *fakePub
	pub = newFakePub(func(ctx context.Context, call int, recs []record.Record) ([]error, error) {
		if call >= 5 && call <= 9 {
			pub.mu.Lock()
			n := pub.inflight
			pub.mu.Unlock()
			if n != 1 {
				t.Errorf("call %d made with %d calls in flight while backing off", call, n)
			}
		}
		switch {
		case call <= 4:
			return nil, errors.New("dial tcp: connection refused")
		case call <= 8:
			return nil, fmt.Errorf("%w: ThrottlingException", ErrThrottled)
		}
		return nil, nil
	})
	sp := &checkSpool{Log: mem, t: t, pub: pub, seqs: seqs}
	reg := prometheus.NewRegistry()
	f, err := New(Config{Linger: -1, CommitInterval: time.Millisecond, BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second}, sp, pub, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{now: t0}
	useFakeClock(f, clk, 11)
	stop := started(t, f)
	waitFor(t, "the cursor at the last record", 10*time.Second, func() bool { return mem.Stats().CommittedSeq == seqs[99] })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	calls, _, accepted, _, _ := pub.snapshot()
	for _, s := range seqs {
		if accepted[s] != 1 {
			t.Fatalf("record %d accepted %d times", s, accepted[s])
		}
	}
	// Calls 1–4 went out together and count as one failure; calls 5–8 are single probes after
	// waits with ceilings 100, 200, 400, 800 ms; call 9 after a wait capped at 1 s succeeds.
	if calls != 18 {
		t.Errorf("%d calls, want 18 (8 failed + 10 batches)", calls)
	}
	sleeps := clk.Sleeps()
	ceilings := []time.Duration{100, 200, 400, 800, 1000}
	if len(sleeps) != len(ceilings) {
		t.Fatalf("waits = %v, want %d", sleeps, len(ceilings))
	}
	var total time.Duration
	below := 0
	for i, d := range sleeps {
		ceil := ceilings[i] * time.Millisecond
		if d < 0 || d > ceil {
			t.Errorf("wait %d = %v, want within [0, %v]", i+1, d, ceil)
		}
		if d < ceil*9/10 {
			below++
		}
		total += d
	}
	if below == 0 {
		t.Errorf("waits %v all at their ceiling: no jitter", sleeps)
	}
	if got := counter(t, reg, "coapgw_forward_backoff_seconds_total"); math.Abs(got-total.Seconds()) > 1e-9 {
		t.Errorf("backoff_seconds_total = %v, want %v", got, total.Seconds())
	}
	if got := counter(t, reg, "coapgw_forward_call_errors_total", "kind", "unavailable"); got != 4 {
		t.Errorf("call_errors{unavailable} = %v, want 4", got)
	}
	if got := counter(t, reg, "coapgw_forward_call_errors_total", "kind", "throttled"); got != 4 {
		t.Errorf("call_errors{throttled} = %v, want 4", got)
	}
	if got := counter(t, reg, "coapgw_forward_records_total", "result", "retried"); got != 80 {
		t.Errorf("retried = %v, want 80 (8 failed calls of 10)", got)
	}
}

func TestBackoffIsFullJitterAndCapped(t *testing.T) {
	f, err := New(Config{BackoffBase: 100 * time.Millisecond, BackoffMax: 30 * time.Second}, newMemory(t), newFakePub(nil), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	f.randN = rng.Int64N
	for n := 1; n <= 70; n++ {
		ceil := time.Duration(math.Min(0.1*math.Pow(2, float64(n-1)), 30) * float64(time.Second))
		var sum, hi time.Duration
		const samples = 2000
		for range samples {
			d := f.backoff(n)
			if d < 0 || d > ceil {
				t.Fatalf("backoff(%d) = %v, outside [0, %v]", n, d, ceil)
			}
			sum += d
			hi = max(hi, d)
		}
		mean := sum / samples
		if mean < ceil*45/100 || mean > ceil*55/100 || hi < ceil*95/100 {
			t.Errorf("backoff(%d): mean %v, max %v; want uniform over [0, %v]", n, mean, hi, ceil)
		}
	}
}

// Cancelling Run while calls hang: Run returns after the grace period, commits only what was
// accepted, and fails the waiters.
func TestRunStopsWithoutCommittingUnfinishedWork(t *testing.T) {
	mem := newMemory(t)
	seqs := appendRecords(t, mem, 0, 40, nil)
	pub := newFakePub(func(ctx context.Context, call int, recs []record.Record) ([]error, error) {
		if recs[0].Seq == seqs[0] {
			return nil, nil
		}
		<-ctx.Done() // hangs until the forwarder gives up on it
		return nil, ctx.Err()
	})
	sp := &checkSpool{Log: mem, t: t, pub: pub, seqs: seqs}
	f, err := New(Config{Linger: -1, CommitInterval: time.Millisecond, ShutdownGrace: 100 * time.Millisecond}, sp, pub, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := started(t, f)
	waitFor(t, "the first batch committed", 5*time.Second, func() bool { return mem.Stats().CommittedSeq == seqs[9] })
	waitFor(t, "four calls made", 5*time.Second, func() bool { c, _, _, _, _ := pub.snapshot(); return c == 4 })
	waiterErr := make(chan error, 1)
	if err := f.OnAccepted(seqs[15], func(err error) { waiterErr <- err }); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("Run took %v to stop with a 100 ms grace", d)
	}
	if c := mem.Stats().CommittedSeq; c != seqs[9] {
		t.Errorf("cursor = %d after stop, want %d (only the accepted batch)", c, seqs[9])
	}
	select {
	case err := <-waiterErr:
		if !errors.Is(err, ErrStopped) {
			t.Errorf("waiter got %v, want ErrStopped", err)
		}
	default:
		t.Error("waiter not called when Run returned")
	}
	if err := f.OnAccepted(seqs[20], func(error) { t.Error("callback after stop") }); !errors.Is(err, ErrStopped) {
		t.Errorf("OnAccepted after Run = %v, want ErrStopped", err)
	}
	if err := f.Run(context.Background()); err == nil {
		t.Error("a second Run succeeded")
	}
	// The spool still holds the unsent records: a new forwarder gets them.
	if st := mem.Stats(); st.Depth != 30 {
		t.Errorf("spool depth %d, want 30", st.Depth)
	}
}

// Calls in flight when Run is cancelled are allowed to finish within the grace period, and what
// they got accepted is committed.
func TestRunLetsInFlightCallsFinish(t *testing.T) {
	mem := newMemory(t)
	seqs := appendRecords(t, mem, 0, 20, nil)
	release := make(chan struct{})
	pub := newFakePub(func(ctx context.Context, call int, recs []record.Record) ([]error, error) {
		<-release
		return nil, nil
	})
	f, err := New(Config{Linger: -1, CommitInterval: time.Hour, ShutdownGrace: 10 * time.Second}, mem, pub, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := started(t, f)
	waitFor(t, "two calls in flight", 5*time.Second, func() bool { c, _, _, _, _ := pub.snapshot(); return c == 2 })
	time.AfterFunc(20*time.Millisecond, func() { close(release) })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if c := mem.Stats().CommittedSeq; c != seqs[19] {
		t.Errorf("cursor = %d, want %d: the final commit must cover calls that finished during the grace", c, seqs[19])
	}
}

func TestOnAccepted(t *testing.T) {
	mem := newMemory(t)
	pub := newFakePub(nil)
	f, err := New(Config{Linger: -1, MaxWaiters: 3, CommitInterval: time.Millisecond}, mem, pub, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the record exists (the spool's done callback can race the forwarder).
	next := mem.Stats().NextSeq
	got := make(chan error, 4)
	for range 2 { // two registrations for the same record: both are called
		if err := f.OnAccepted(next, func(err error) { got <- err }); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.OnAccepted(next+1000, func(err error) { got <- err }); err != nil {
		t.Fatal(err)
	}
	if err := f.OnAccepted(next+1001, func(error) {}); err != nil {
		t.Fatal(err)
	}
	if err := f.OnAccepted(next+1002, func(error) {}); !errors.Is(err, ErrTooManyWaiters) {
		t.Fatalf("registration beyond MaxWaiters: %v", err)
	}
	stop := started(t, f)
	seqs := appendRecords(t, mem, 0, 1, nil)
	if seqs[0] != next {
		t.Fatalf("appended seq %d, expected %d", seqs[0], next)
	}
	for range 2 {
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("waiter: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("waiter not called")
		}
	}
	// Resolved already: called back before OnAccepted returns.
	var called atomic.Bool
	if err := f.OnAccepted(next, func(err error) { called.Store(err == nil) }); err != nil || !called.Load() {
		t.Fatalf("OnAccepted for an accepted record: err %v, called %v", err, called.Load())
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if !errors.Is(err, ErrStopped) {
			t.Fatalf("waiter for a record never sent: %v", err)
		}
	default:
		t.Fatal("waiter for a record never sent not called at stop")
	}
}

func TestLagAndPendingGauges(t *testing.T) {
	mem := newMemory(t)
	seqs := appendRecords(t, mem, 0, 5, nil) // received at t0 .. t0+4ms
	release := make(chan struct{})
	pub := newFakePub(func(ctx context.Context, call int, recs []record.Record) ([]error, error) {
		select {
		case <-release:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	reg := prometheus.NewRegistry()
	f, err := New(Config{Linger: -1, CommitInterval: time.Millisecond}, mem, pub, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{now: t0.Add(time.Hour)}
	useFakeClock(f, clk, 1)
	if got := counter(t, reg, "coapgw_forward_lag_seconds"); got != 0 {
		t.Fatalf("lag before anything was read = %v", got)
	}
	started(t, f)
	waitFor(t, "the batch in flight", 5*time.Second, func() bool { c, _, _, _, _ := pub.snapshot(); return c == 1 })
	waitFor(t, "pending = 5", 5*time.Second, func() bool { return counter(t, reg, "coapgw_forward_pending_records") == 5 })
	if got := counter(t, reg, "coapgw_forward_lag_seconds"); got != 3600 {
		t.Errorf("lag = %v s, want 3600 (now − received_at of the oldest)", got)
	}
	clk.Advance(time.Minute)
	if got := f.Stats().Lag; got != time.Hour+time.Minute {
		t.Errorf("Stats().Lag = %v, want 1h1m", got)
	}
	close(release)
	waitFor(t, "the cursor at the last record", 5*time.Second, func() bool { return mem.Stats().CommittedSeq == seqs[4] })
	waitFor(t, "lag 0", 5*time.Second, func() bool { return counter(t, reg, "coapgw_forward_lag_seconds") == 0 })
}

// A trickle of records is batched by Linger instead of going out one call each.
func TestLingerBatchesATrickle(t *testing.T) {
	mem := newMemory(t)
	pub := newFakePub(nil)
	f, err := New(Config{Linger: 300 * time.Millisecond, CommitInterval: time.Millisecond}, mem, pub, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	started(t, f)
	var seqs []uint64
	for i := range 3 {
		seqs = append(seqs, appendRecords(t, mem, i, 1, nil)...)
		time.Sleep(5 * time.Millisecond)
	}
	waitFor(t, "the cursor at the last record", 5*time.Second, func() bool { return mem.Stats().CommittedSeq == seqs[2] })
	if _, sizes, _, _, _ := pub.snapshot(); !slices.Equal(sizes, []int{3}) {
		t.Errorf("batch sizes %v, want [3]", sizes)
	}
}

// When the window is full, leftovers of a read wait for the next read instead of going out as
// partial batches: a backlog goes out in full batches however MaxPending and Linger are set.
func TestBacklogGoesOutInFullBatches(t *testing.T) {
	mem := newMemory(t)
	seqs := appendRecords(t, mem, 0, 500, nil)
	pub := newFakePub(func(ctx context.Context, call int, recs []record.Record) ([]error, error) {
		time.Sleep(3 * time.Millisecond)
		return nil, nil
	})
	f, err := New(Config{MaxPending: 25, Linger: time.Millisecond, CommitInterval: time.Millisecond}, mem, pub, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	started(t, f)
	waitFor(t, "the cursor at the last record", 10*time.Second, func() bool { return mem.Stats().CommittedSeq == seqs[499] })
	if calls, sizes, _, _, _ := pub.snapshot(); calls != 50 {
		t.Errorf("%d calls for 500 records, want 50 (sizes %v)", calls, sizes)
	}
}

// With a small MaxPending the forwarder never holds more than that, and still delivers everything.
func TestMaxPendingBoundsMemory(t *testing.T) {
	mem := newMemory(t)
	seqs := appendRecords(t, mem, 0, 300, nil)
	var f *Forwarder
	pub := newFakePub(func(ctx context.Context, call int, recs []record.Record) ([]error, error) {
		if p := f.pending.Load(); p > 16 {
			t.Errorf("%d records pending, MaxPending is 16", p)
		}
		return nil, nil
	})
	var err error
	f, err = New(Config{MaxPending: 16, Linger: -1, CommitInterval: time.Millisecond}, mem, pub, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	started(t, f)
	waitFor(t, "the cursor at the last record", 10*time.Second, func() bool { return mem.Stats().CommittedSeq == seqs[299] })
}

// Closing the spool under the forwarder ends Run with an error, not a hang.
func TestRunEndsWhenTheSpoolCloses(t *testing.T) {
	mem := spool.NewMemory(spool.Options{})
	f, err := New(Config{}, mem, newFakePub(nil), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- f.Run(context.Background()) }()
	time.Sleep(10 * time.Millisecond)
	mem.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, spool.ErrClosed) {
			t.Fatalf("Run = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the spool closed")
	}
}

func TestNewValidates(t *testing.T) {
	mem := newMemory(t)
	for _, cfg := range []Config{
		{Concurrency: -1},
		{MaxPending: -5},
		{BackoffBase: time.Second, BackoffMax: time.Millisecond},
		{CommitInterval: -time.Second},
	} {
		if _, err := New(cfg, mem, newFakePub(nil), nil, nil); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	if _, err := New(Config{}, nil, newFakePub(nil), nil, nil); err == nil {
		t.Error("New with a nil spool succeeded")
	}
	reg := prometheus.NewRegistry()
	if _, err := New(Config{}, mem, newFakePub(nil), nil, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{}, mem, newFakePub(nil), nil, reg); err == nil {
		t.Error("registering the metrics twice succeeded")
	}
}

// TestWaiterBetweenResolveAndAdvance: a waiter registered for a record after its outcome is known
// (resolve) but before the watermark moves over it (advance) is called at once. Before, the
// outcome was kept only when nobody waited, so such a waiter was called only at stop.
func TestWaiterBetweenResolveAndAdvance(t *testing.T) {
	var w waiters
	w.init(8)
	var first, second atomic.Int32
	if err := w.register(5, func(error) { first.Add(1) }); err != nil {
		t.Fatal(err)
	}
	w.resolve(5, nil)
	if first.Load() != 1 {
		t.Fatalf("waiter registered before resolve called %d times, want 1", first.Load())
	}
	if err := w.register(5, func(err error) {
		if err == nil {
			second.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if second.Load() != 1 {
		t.Fatalf("waiter registered between resolve and advance called %d times with nil, want 1", second.Load())
	}
	w.advance([]*item{{rec: record.Record{Seq: 5}}})
	if len(w.resolved) != 0 || len(w.fns) != 0 {
		t.Fatalf("after advance: %d outcomes, %d waiters kept, want none", len(w.resolved), len(w.fns))
	}
}
