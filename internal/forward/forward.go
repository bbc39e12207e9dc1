// Package forward moves records from the gateway's spool to the queue: it reads spool entries in
// order, publishes them in batches with several calls in flight, retries what failed (per record,
// with full-jitter exponential backoff on throttling and outages), and advances the spool cursor
// only over a contiguous prefix of records the queue has accepted — a record completing out of order
// never moves the cursor past an earlier one still in flight or being retried.
//
// Failure handling:
//
//   - A call that fails as a whole (network, 5xx, throttling, access denied, queue missing) puts its
//     records back at the front of the send queue, and the forwarder backs off: one call at a time,
//     each after a random wait in [0, min(BackoffMax, BackoffBase·2^(n-1))] for the n-th failure in a
//     row, until a call succeeds. Such records are never dropped: the spool absorbs an outage up to
//     its cap.
//   - A record that failed inside an otherwise successful batch (a per-entry failure) is retried on
//     its own, after its own full-jitter wait.
//   - A record the queue rejects for what it is (the Publisher's error wraps ErrRejected: too large,
//     not encodable, an SQS sender fault for that entry) is retried alone up to MaxRejects times, then
//     dropped: counted as failed, logged with its (gw, seq), and acknowledged so it cannot block the
//     spool. A rejection of a whole multi-record call is not blamed on any record: they are retried
//     one by one.
//   - A spool entry that is not a valid record is dropped the same way.
//
// Logging: a run of failures of one kind — whole calls, multi-record calls the queue rejected,
// spool reads, cursor commits — is logged once when it starts (Warn, with the error) and once when
// it ends (Info, with how many failed and for how long), never once per failure (ops.FailureRun).
// Stats reports the run of whole-call failures in progress (Failures, FailingSince, LastError):
// the gateway's /readyz uses it. A dropped record is logged on its own, with its (gw, seq).
//
// Records go out roughly in sequence order, not strictly: batches are in flight together and
// retries go out on their own. Consumers must not rely on order (the processor uses received_at).
//
// Accepted-wait API (for --ack-after=queue): OnAccepted(seq, fn) registers fn to run once the record
// with that sequence number has been accepted by the queue (fn(nil)), dropped (fn(err) with err
// wrapping ErrRejected), or abandoned because Run stopped (fn(ErrStopped)). Registration never
// blocks and starts no goroutine; fn runs on the forwarder's goroutine (or on the caller's, when the
// outcome is already known) and must be fast and must not call into the Forwarder. At most
// Config.MaxWaiters registrations are outstanding; beyond that OnAccepted returns ErrTooManyWaiters
// and the caller answers as it would for a full spool.
//
// Metrics (registered on the Registerer given to New):
//
//	coapgw_forward_records_total{result}    counter   sent (accepted by the queue), retried (sent again
//	                                                  after a failure), failed (dropped)
//	coapgw_forward_batches_total            counter   Publish calls made
//	coapgw_forward_batch_seconds            histogram duration of Publish calls
//	coapgw_forward_call_errors_total{kind}  counter   whole-call failures: throttled, unavailable, rejected
//	coapgw_forward_lag_seconds              gauge     now − received_at of the oldest record read and not
//	                                                  yet accepted (0 when none)
//	coapgw_forward_pending_records          gauge     records read from the spool and not yet acknowledged
//	coapgw_forward_backoff_seconds_total    counter   time spent waiting before retries
//
// Configuration (Config; the config keys of `coapgw serve` in parentheses, each also a flag
// --forward-… and a COAPGW_FORWARD_… variable): Concurrency (forward_concurrency, default 4),
// MaxPending (forward_max_pending, 1024), Linger (forward_linger, 10ms; the key's 0 means never
// wait), BackoffBase (forward_backoff_base, 100ms), BackoffMax (forward_backoff_max, 30s),
// MaxRejects (forward_max_rejects, 3), CommitInterval (forward_commit_interval, 100ms),
// ShutdownGrace (forward_shutdown_grace, 5s), MaxWaiters (forward_max_waiters, 65536).
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgw/coapgw/internal/ops"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
	"github.com/prometheus/client_golang/prometheus"
)

// Publisher sends records to the queue.
type Publisher interface {
	// MaxBatch is the most records one Publish call should carry (one queue request); at least 1.
	MaxBatch() int
	// Publish sends recs. If err != nil the call failed as a whole and no record is known to be
	// accepted. Otherwise errs is nil when every record was accepted, or holds one error per record,
	// nil for the accepted ones. Errors wrapping ErrRejected mean the queue refused the record (or the
	// whole request, for err) for what it contains; errors wrapping ErrThrottled mean slow down;
	// anything else is a transient failure or outage. Publish must return soon after ctx is
	// cancelled (Run's shutdown relies on it) and must not keep recs after it returns.
	Publish(ctx context.Context, recs []record.Record) (errs []error, err error)
}

// Spool is what the forwarder needs from the spool (spool.Log provides it).
type Spool interface {
	Next(ctx context.Context, max int) ([]spool.Entry, error)
	Commit(seq uint64) error
}

var (
	// ErrRejected marks a Publisher error saying the queue will not take this record as it is.
	ErrRejected = errors.New("rejected by the queue")
	// ErrThrottled marks a Publisher error saying the queue throttled the call.
	ErrThrottled = errors.New("throttled by the queue")
	// ErrStopped is passed to OnAccepted callbacks still waiting when Run returns, and returned by
	// OnAccepted afterwards.
	ErrStopped = errors.New("forwarder stopped")
	// ErrTooManyWaiters is returned by OnAccepted when Config.MaxWaiters registrations are outstanding.
	ErrTooManyWaiters = errors.New("too many records waiting for queue acceptance")
)

// Config configures a Forwarder. Zero values get the defaults listed in the package doc.
type Config struct {
	Concurrency    int           // Publish calls in flight
	MaxPending     int           // records read from the spool and not yet acknowledged (memory bound)
	Linger         time.Duration // how long a partial batch waits to fill up; negative: never waits
	BackoffBase    time.Duration // first retry waits up to this
	BackoffMax     time.Duration // no retry waits longer than this
	MaxRejects     int           // times a rejected record is tried alone before it is dropped
	CommitInterval time.Duration // least time between two cursor writes (each is an fsync)
	ShutdownGrace  time.Duration // how long Run lets in-flight calls finish after ctx ends
	MaxWaiters     int           // outstanding OnAccepted registrations
}

func (c Config) withDefaults() (Config, error) {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if c.Concurrency == 0 {
		c.Concurrency = 4
	}
	if c.MaxPending == 0 {
		c.MaxPending = 1024
	}
	if c.MaxRejects == 0 {
		c.MaxRejects = 3
	}
	if c.MaxWaiters == 0 {
		c.MaxWaiters = 65536
	}
	def(&c.Linger, 10*time.Millisecond)
	def(&c.BackoffBase, 100*time.Millisecond)
	def(&c.BackoffMax, 30*time.Second)
	def(&c.CommitInterval, 100*time.Millisecond)
	def(&c.ShutdownGrace, 5*time.Second)
	var errs []error
	if c.Concurrency < 0 || c.MaxPending < 0 || c.MaxRejects < 0 || c.MaxWaiters < 0 {
		errs = append(errs, errors.New("concurrency, max pending, max rejects and max waiters must be positive"))
	}
	if c.BackoffBase < 0 || c.BackoffMax < c.BackoffBase {
		errs = append(errs, fmt.Errorf("backoff: need 0 < base (%v) <= max (%v)", c.BackoffBase, c.BackoffMax))
	}
	if c.CommitInterval < 0 || c.ShutdownGrace < 0 {
		errs = append(errs, errors.New("commit interval and shutdown grace must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("forward: %w", err)
	}
	return c, nil
}

// Stats is a snapshot of a Forwarder, for health endpoints.
type Stats struct {
	Pending   int           // records read from the spool and not yet acknowledged
	Lag       time.Duration // age of the oldest of them not yet accepted (0 when none)
	Committed uint64        // the last sequence number this forwarder committed to the spool cursor
	Backoff   bool          // whole calls are failing: one call at a time, with waits
	// The run of whole-call failures in progress (zero when the last call succeeded): how many
	// calls failed in a row, since when, and the last error.
	Failures     int
	FailingSince time.Time
	LastError    error
}

// Forwarder moves records from a Spool to a Publisher. Create it with New and start it with Run.
type Forwarder struct {
	cfg      Config
	sp       Spool
	pub      Publisher
	log      *slog.Logger
	m        *metrics
	maxBatch int
	waiters  waiters
	started  atomic.Bool

	// Injected for tests; real time and randomness otherwise.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
	randN func(n int64) int64 // uniform in [0, n)

	oldestNanos atomic.Int64 // received_at of the oldest unaccepted record, 0 if none
	pending     atomic.Int64
	committed   atomic.Uint64
	backingOff  atomic.Bool

	// Runs of failures, each logged when it starts and when it ends (with the count), not per
	// failure: whole queue calls, multi-record calls the queue rejected, spool reads, cursor
	// commits.
	calls, batchRejects, reads, commits *ops.FailureRun
}

// New builds a Forwarder; it does no I/O. log and reg may be nil.
func New(cfg Config, sp Spool, pub Publisher, log *slog.Logger, reg prometheus.Registerer) (*Forwarder, error) {
	if sp == nil || pub == nil {
		return nil, errors.New("forward: nil spool or publisher")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Forwarder{
		cfg: cfg, sp: sp, pub: pub, log: log,
		maxBatch: max(pub.MaxBatch(), 1),
		now:      time.Now,
		sleep:    sleepCtx,
		randN:    rand.Int64N,
	}
	f.calls = ops.NewFailureRun(log, "queue calls failing; backing off, the spool keeps the records", "queue calls succeed again")
	f.batchRejects = ops.NewFailureRun(log, "queue rejected a batch; retrying its records one by one", "queue accepts batches again")
	f.reads = ops.NewFailureRun(log, "spool reads failing; retrying every second", "spool reads succeed again")
	f.commits = ops.NewFailureRun(log, "spool cursor commits failing; will retry", "spool cursor commits succeed again")
	f.waiters.init(cfg.MaxWaiters)
	f.m, err = newMetrics(reg, f.lagSeconds, func() float64 { return float64(f.pending.Load()) })
	if err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	return f, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *Forwarder) lagSeconds() float64 {
	ns := f.oldestNanos.Load()
	if ns == 0 {
		return 0
	}
	return max(f.now().Sub(time.Unix(0, ns)).Seconds(), 0)
}

// Stats reports the forwarder's state; safe to call at any time.
func (f *Forwarder) Stats() Stats {
	n, since, last := f.calls.State()
	return Stats{
		Pending:   int(f.pending.Load()),
		Lag:       time.Duration(f.lagSeconds() * float64(time.Second)),
		Committed: f.committed.Load(),
		Backoff:   f.backingOff.Load(),
		Failures:  int(n), FailingSince: since, LastError: last,
	}
}

// OnAccepted registers fn to be called once with the outcome of the record with sequence number
// seq: nil when the queue accepted it, an error wrapping ErrRejected when it was dropped, ErrStopped
// when Run returned first. If the outcome is already known (the record was resolved before the call,
// or seq is at or below everything resolved so far), fn is called before OnAccepted returns.
// OnAccepted never blocks; it returns ErrTooManyWaiters when Config.MaxWaiters registrations are
// outstanding and ErrStopped after Run has returned, and then does not call fn. fn must be fast and
// must not call into the Forwarder.
func (f *Forwarder) OnAccepted(seq uint64, fn func(error)) error {
	return f.waiters.register(seq, fn)
}

// backoff returns a full-jitter wait for the n-th consecutive failure (n >= 1).
func (f *Forwarder) backoff(n int) time.Duration {
	ceil := f.cfg.BackoffBase
	for i := 1; i < n && ceil < f.cfg.BackoffMax; i++ {
		ceil *= 2
	}
	ceil = min(ceil, f.cfg.BackoffMax)
	if ceil <= 0 {
		return 0
	}
	return time.Duration(f.randN(int64(ceil) + 1))
}

// waiters is the OnAccepted registry. The forwarder's loop resolves records (resolve) and pops the
// resolved prefix (advance); callers register from any goroutine.
type waiters struct {
	mu        sync.Mutex
	max       int
	fns       map[uint64]func(error)
	resolved  map[uint64]error // outcomes above the watermark nobody has asked for yet
	watermark uint64           // every record at or below it is resolved
	failed    map[uint64]error // recent failures at or below the watermark
	failedQ   []uint64         // their order, oldest first, at most maxRecentFailures
	stopped   bool
}

const maxRecentFailures = 4096

func (w *waiters) init(max int) {
	w.max = max
	w.fns = make(map[uint64]func(error))
	w.resolved = make(map[uint64]error)
	w.failed = make(map[uint64]error)
}

func (w *waiters) register(seq uint64, fn func(error)) error {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return ErrStopped
	}
	if seq <= w.watermark {
		err := w.failed[seq]
		w.mu.Unlock()
		fn(err)
		return nil
	}
	if err, ok := w.resolved[seq]; ok {
		w.mu.Unlock()
		fn(err)
		return nil
	}
	if prev, ok := w.fns[seq]; ok {
		w.fns[seq] = func(err error) { prev(err); fn(err) }
		w.mu.Unlock()
		return nil
	}
	if len(w.fns) >= w.max {
		w.mu.Unlock()
		return ErrTooManyWaiters
	}
	w.fns[seq] = fn
	w.mu.Unlock()
	return nil
}

// resolve records the outcome of one record and calls its waiter, if any. The outcome is kept
// (until advance moves the watermark over it) even when a waiter was called, so that a waiter
// registered between resolve and advance is answered at once rather than never.
func (w *waiters) resolve(seq uint64, err error) {
	w.mu.Lock()
	fn, ok := w.fns[seq]
	if ok {
		delete(w.fns, seq)
	}
	if w.resolved != nil {
		w.resolved[seq] = err
	}
	w.mu.Unlock()
	if ok {
		fn(err)
	}
}

// advance moves the watermark over a resolved prefix: the given items, in sequence order.
func (w *waiters) advance(items []*item) {
	if len(items) == 0 {
		return
	}
	w.mu.Lock()
	for _, it := range items {
		delete(w.resolved, it.rec.Seq)
		if it.err != nil {
			if len(w.failedQ) == maxRecentFailures {
				delete(w.failed, w.failedQ[0])
				w.failedQ = w.failedQ[1:]
			}
			w.failed[it.rec.Seq] = it.err
			w.failedQ = append(w.failedQ, it.rec.Seq)
		}
	}
	w.watermark = items[len(items)-1].rec.Seq
	w.mu.Unlock()
}

// stop fails every outstanding waiter with ErrStopped and refuses later registrations.
func (w *waiters) stop() {
	w.mu.Lock()
	w.stopped = true
	fns := w.fns
	w.fns = nil
	w.resolved = nil
	w.mu.Unlock()
	for _, fn := range fns {
		fn(ErrStopped)
	}
}
