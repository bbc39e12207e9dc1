package forward

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
)

type itemState uint8

const (
	stQueued  itemState = iota // waiting in queue or retryQ
	stSending                  // in a job at a worker
	stDone                     // accepted, or dropped (err != nil)
)

// item is one record read from the spool and not yet acknowledged. Its fields other than rec are
// owned by the run loop; workers only read rec.
type item struct {
	rec       record.Record
	readAt    time.Time // wall clock, for Linger
	state     itemState
	attempts  int       // transient failures of this record on its own
	rejects   int       // rejections of this record on its own
	notBefore time.Time // earliest next attempt (f.now), for per-record retries
	err       error     // outcome once done: nil = accepted
}

// job is one Publish call for a worker.
type job struct {
	items []*item
	delay time.Duration // wait this long before calling
	gen   int           // runner.failures when the job was made
}

type result struct {
	worker    int
	job       *job
	errs      []error
	err       error
	abandoned bool // not sent: the backoff wait was cut short by shutdown
}

type readResult struct {
	items []*item
	err   error
}

// maxRead caps the entries asked of the spool at once.
const maxRead = 256

// Run forwards until ctx ends (or the spool is closed), then stops reading, lets the calls in flight
// finish for at most Config.ShutdownGrace (cancelling them after that: their records are not
// committed and will be sent again by the next run), commits the contiguous accepted prefix, fails
// outstanding OnAccepted waiters with ErrStopped and returns. It returns nil when ctx ended and an
// error when the spool failed. Run may be called once.
func (f *Forwarder) Run(ctx context.Context) error {
	if !f.started.CompareAndSwap(false, true) {
		return errors.New("forward: Run called more than once")
	}
	r := &runner{f: f}
	return r.run(ctx)
}

// runner is the state of one Run, owned by its loop goroutine.
type runner struct {
	f        *Forwarder
	window   []*item // every item read and not yet popped, in sequence order
	queue    []*item // not yet sent (or sent and failed as a whole call), roughly in sequence order
	retryQ   []*item // to be retried on their own
	failures int     // whole-call failures in a row
	until    time.Time
	calls    int // jobs handed to workers and not yet back
	idle     []int
	work     []chan *job
	cm       *committer

	lingerT  *time.Timer
	lingerAt time.Time // deadline the timer is armed for; zero if not armed
}

func (r *runner) run(ctx context.Context) error {
	f := r.f
	callCtx, cancelCalls := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCalls()
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()

	var wg sync.WaitGroup
	results := make(chan result, f.cfg.Concurrency)
	r.work = make([]chan *job, f.cfg.Concurrency)
	for i := range r.work {
		r.work[i] = make(chan *job, 1)
		r.idle = append(r.idle, i)
		wg.Go(func() { f.worker(ctx, callCtx, i, r.work[i], results) })
	}
	wantRead := make(chan int)
	gotRead := make(chan readResult)
	wg.Go(func() { f.reader(readCtx, wantRead, gotRead) })
	r.cm = newCommitter(f)
	go r.cm.run()

	r.lingerT = time.NewTimer(time.Hour)
	r.lingerT.Stop()
	defer r.lingerT.Stop()

	var (
		reading  bool // a read request is outstanding
		stopping bool
		runErr   error
		grace    *time.Timer
	)
	done := ctx.Done()
	stop := func() {
		stopping = true
		done = nil
		stopReading()
		grace = time.AfterFunc(f.cfg.ShutdownGrace, cancelCalls)
	}
	for {
		if !stopping {
			r.dispatch()
		} else if r.calls == 0 {
			break
		}
		var wantC chan int
		readN := r.readSize()
		if !stopping && !reading && readN > 0 {
			wantC = wantRead
		}
		select {
		case <-done:
			stop()
		case wantC <- readN:
			reading = true
		case rr := <-gotRead:
			reading = false
			if rr.err != nil {
				runErr = fmt.Errorf("forward: read spool: %w", rr.err)
				f.log.Error("spool read failed; stopping", "err", rr.err)
				stop()
			}
			r.add(rr.items)
		case res := <-results:
			r.calls--
			r.idle = append(r.idle, res.worker)
			r.handle(res, stopping)
		case <-r.lingerT.C:
			r.lingerAt = time.Time{}
		}
		r.advance()
	}
	for _, c := range r.work {
		close(c)
	}
	stopReading()
	wg.Wait()
	if grace != nil {
		grace.Stop()
	}
	r.cm.close() // the final commit of the accepted prefix
	f.waiters.stop()
	f.backingOff.Store(false)
	return runErr
}

// dispatch hands ready jobs to idle workers. While whole calls are failing only one call is out at
// a time (it probes the queue after its backoff wait).
func (r *runner) dispatch() {
	now := r.f.now()
	for len(r.idle) > 0 {
		if r.failures > 0 && r.calls > 0 {
			break
		}
		j := r.take(now)
		if j == nil {
			break
		}
		w := r.idle[len(r.idle)-1]
		r.idle = r.idle[:len(r.idle)-1]
		r.calls++
		r.work[w] <- j
	}
	r.armLinger()
}

// take builds the next job: a record to retry on its own first, else a batch of new records when
// it is full or its oldest record has lingered long enough.
func (r *runner) take(now time.Time) *job {
	var (
		items []*item
		at    time.Time
	)
	switch n := len(r.queue); {
	case len(r.retryQ) > 0:
		it := r.retryQ[0]
		r.retryQ = r.retryQ[1:]
		items, at = []*item{it}, it.notBefore
	case n > 0 && (n >= r.f.maxBatch || r.lingered()):
		k := min(n, r.f.maxBatch)
		items = slices.Clone(r.queue[:k])
		clear(r.queue[:k])
		r.queue = r.queue[k:]
	default:
		return nil
	}
	if r.until.After(at) {
		at = r.until
	}
	j := &job{items: items, gen: r.failures}
	if d := at.Sub(now); d > 0 {
		j.delay = d
	}
	for _, it := range items {
		it.state = stSending
	}
	return j
}

// lingered reports whether a partial batch may go out: its oldest record has waited Linger, and
// no full batch is sure to follow soon (when the window is full and calls are in flight, more
// records wait in the spool and will be read as soon as those calls free room).
func (r *runner) lingered() bool {
	if r.f.cfg.Linger < 0 {
		return true
	}
	if len(r.window) >= r.f.cfg.MaxPending && r.calls > 0 {
		return false
	}
	return time.Since(r.queue[0].readAt) >= r.f.cfg.Linger
}

// readSize is how many entries to ask the spool for (0: do not read now): as many as fit in the
// window, in whole batches, so that a backlog is not cut into partial batches. With less room than
// a batch it waits for the records in the window to free more, unless the window is empty.
func (r *runner) readSize() int {
	room := r.f.cfg.MaxPending - len(r.window)
	n := min(room, maxRead)
	switch {
	case n >= r.f.maxBatch:
		return n - n%r.f.maxBatch
	case len(r.window) == 0:
		return n
	}
	return 0
}

// armLinger sets the linger timer for a partial batch waiting in the queue.
func (r *runner) armLinger() {
	if len(r.queue) == 0 || len(r.queue) >= r.f.maxBatch || r.f.cfg.Linger < 0 {
		return
	}
	at := r.queue[0].readAt.Add(r.f.cfg.Linger)
	if at.Equal(r.lingerAt) {
		return
	}
	r.lingerAt = at
	r.lingerT.Reset(max(time.Until(at), 0))
}

// add takes newly read items into the window.
func (r *runner) add(items []*item) {
	for _, it := range items {
		r.window = append(r.window, it)
		if it.err != nil {
			r.drop(it, it.err)
			continue
		}
		r.queue = append(r.queue, it)
	}
}

// handle applies the outcome of one job.
func (r *runner) handle(res result, stopping bool) {
	f := r.f
	items := res.job.items
	if res.abandoned {
		r.requeue(items, stopping)
		return
	}
	if res.err == nil && res.errs != nil && len(res.errs) != len(items) {
		res.err = fmt.Errorf("publisher returned %d results for %d records", len(res.errs), len(items))
	}
	now := f.now()
	if err := res.err; err != nil {
		if stopping && errors.Is(err, context.Canceled) {
			return // abandoned at the end of the grace period: not committed, sent again next run
		}
		if errors.Is(err, ErrRejected) {
			f.m.callErrors[kindRejected].Inc()
			if len(items) == 1 {
				r.reject(items[0], err, now, stopping)
				return
			}
			// Not blamed on any one record: try each alone.
			f.batchRejects.Fail(err, "records", len(items))
			for _, it := range items {
				it.notBefore = now
				r.retry(it, stopping)
			}
			return
		}
		if errors.Is(err, ErrThrottled) {
			f.m.callErrors[kindThrottled].Inc()
		} else {
			f.m.callErrors[kindUnavailable].Inc()
		}
		// Calls made before the last failure was known fail for the same reason: only a call made
		// since then (a probe) counts as a new failure in a row.
		if res.job.gen == r.failures {
			r.failures++
			r.until = now.Add(f.backoff(r.failures))
			if !f.calls.Fail(err) {
				f.log.Debug("queue call failed again", "failures", r.failures, "err", err)
			}
		}
		r.requeue(items, stopping)
		return
	}
	if r.failures > 0 {
		f.calls.OK()
		r.failures, r.until = 0, time.Time{}
	}
	if len(items) > 1 {
		f.batchRejects.OK()
	}
	for i, it := range items {
		var err error
		if res.errs != nil {
			err = res.errs[i]
		}
		switch {
		case err == nil:
			it.state, it.err = stDone, nil
			f.m.sent.Inc()
			f.waiters.resolve(it.rec.Seq, nil)
		case errors.Is(err, ErrRejected):
			r.reject(it, err, now, stopping)
		default:
			it.attempts++
			it.notBefore = now.Add(f.backoff(it.attempts))
			f.log.Debug("record failed in a batch; retrying it alone", "seq", it.rec.Seq, "attempt", it.attempts, "err", err)
			r.retry(it, stopping)
		}
	}
}

// requeue puts the items of a job that failed as a whole back at the front of the queue.
func (r *runner) requeue(items []*item, stopping bool) {
	for _, it := range items {
		it.state = stQueued
	}
	if stopping {
		return
	}
	r.f.m.retried.Add(float64(len(items)))
	r.queue = append(slices.Clip(items), r.queue...)
}

func (r *runner) retry(it *item, stopping bool) {
	it.state = stQueued
	if stopping {
		return
	}
	r.f.m.retried.Inc()
	r.retryQ = append(r.retryQ, it)
}

// reject handles a rejection of one record on its own: retried up to MaxRejects times, then dropped.
func (r *runner) reject(it *item, err error, now time.Time, stopping bool) {
	it.rejects++
	if it.rejects >= r.f.cfg.MaxRejects {
		r.drop(it, fmt.Errorf("forward: record %s/%d dropped after %d rejections: %w", it.rec.GW, it.rec.Seq, it.rejects, err))
		return
	}
	it.notBefore = now.Add(r.f.backoff(it.rejects))
	r.retry(it, stopping)
}

// drop gives up on a record: it counts as acknowledged so that it cannot block the spool.
func (r *runner) drop(it *item, err error) {
	it.state, it.err = stDone, err
	r.f.m.failed.Inc()
	r.f.log.Error("record dropped", "gw", it.rec.GW, "seq", it.rec.Seq, "type", it.rec.Type, "id", it.rec.ID, "err", err)
	r.f.waiters.resolve(it.rec.Seq, err)
}

// advance pops the resolved prefix of the window, moves the commit target over it and updates the
// gauges.
func (r *runner) advance() {
	f := r.f
	k := 0
	for k < len(r.window) && r.window[k].state == stDone {
		k++
	}
	if k > 0 {
		f.waiters.advance(r.window[:k])
		r.cm.set(r.window[k-1].rec.Seq)
		clear(r.window[:k])
		r.window = r.window[k:]
	}
	if len(r.window) > 0 {
		f.oldestNanos.Store(r.window[0].rec.ReceivedAt.UnixNano())
	} else {
		f.oldestNanos.Store(0)
	}
	f.pending.Store(int64(len(r.window)))
	f.backingOff.Store(r.failures > 0)
}

// worker makes the Publish calls of the jobs it is given. Backoff waits end with ctx; calls get
// callCtx, which outlives ctx by the shutdown grace.
func (f *Forwarder) worker(ctx, callCtx context.Context, id int, in <-chan *job, out chan<- result) {
	var recs []record.Record
	for j := range in {
		res := result{worker: id, job: j}
		if j.delay > 0 {
			start := f.now()
			err := f.sleep(ctx, j.delay)
			f.m.backoff.Add(max(f.now().Sub(start), 0).Seconds())
			if err != nil {
				res.abandoned = true
				out <- res
				continue
			}
		}
		recs = recs[:0]
		for _, it := range j.items {
			recs = append(recs, it.rec)
		}
		start := time.Now()
		res.errs, res.err = f.pub.Publish(callCtx, recs)
		f.m.batches.Inc()
		f.m.batchSeconds.Observe(time.Since(start).Seconds())
		clear(recs)
		out <- res
	}
}

// reader reads the spool when asked (want carries how many entries at most) and decodes the entries.
// Spool errors other than ErrClosed are logged and retried.
func (f *Forwarder) reader(ctx context.Context, want <-chan int, got chan<- readResult) {
	for {
		var n int
		select {
		case n = <-want:
		case <-ctx.Done():
			return
		}
		var rr readResult
		for {
			es, err := f.sp.Next(ctx, n)
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				f.reads.OK()
				rr.items = decodeEntries(es)
				break
			}
			if errors.Is(err, spool.ErrClosed) {
				rr.err = err
				break
			}
			f.reads.Fail(err)
			if sleepCtx(ctx, time.Second) != nil {
				return
			}
		}
		select {
		case got <- rr:
		case <-ctx.Done():
			return
		}
	}
}

func decodeEntries(es []spool.Entry) []*item {
	items := make([]*item, len(es))
	now := time.Now()
	for i, e := range es {
		it := &item{readAt: now}
		if err := record.Decode(e.Data, &it.rec); err != nil {
			it.err = fmt.Errorf("%w: spool entry %d is not a valid record: %v", ErrRejected, e.Seq, err)
		}
		it.rec.Seq = e.Seq
		items[i] = it
	}
	return items
}

// committer writes the spool cursor from its own goroutine, at most once per CommitInterval, always
// to the latest target, so a slow fsync never holds up the run loop.
type committer struct {
	f      *Forwarder
	mu     sync.Mutex
	target uint64
	last   uint64
	sig    chan struct{}
	quit   chan struct{}
	done   chan struct{}
}

func newCommitter(f *Forwarder) *committer {
	return &committer{f: f, sig: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

func (c *committer) set(seq uint64) {
	c.mu.Lock()
	c.target = seq
	c.mu.Unlock()
	select {
	case c.sig <- struct{}{}:
	default:
	}
}

func (c *committer) run() {
	defer close(c.done)
	for {
		select {
		case <-c.quit:
			return
		case <-c.sig:
		}
		c.commit()
		if c.f.cfg.CommitInterval > 0 {
			t := time.NewTimer(c.f.cfg.CommitInterval)
			select {
			case <-t.C:
			case <-c.quit:
				t.Stop()
				return
			}
		}
	}
}

func (c *committer) commit() {
	c.mu.Lock()
	seq := c.target
	c.mu.Unlock()
	if seq <= c.last {
		return
	}
	if err := c.f.sp.Commit(seq); err != nil {
		c.f.commits.Fail(err, "seq", seq)
		select { // try again after the interval
		case c.sig <- struct{}{}:
		default:
		}
		return
	}
	c.f.commits.OK("seq", seq)
	c.last = seq
	c.f.committed.Store(seq)
}

// close stops the committer goroutine and makes the final commit.
func (c *committer) close() {
	close(c.quit)
	<-c.done
	c.commit()
}
