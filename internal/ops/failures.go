package ops

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// FailureRun logs a run of failures of one kind once instead of once per failure: a Warn at the
// first failure (with its error), an Info when the run ends (with how many failed and for how
// long), and nothing in between, however often it fails. State reports the run in progress, for
// readiness checks and status pages. It is safe for concurrent use; the zero value is not
// usable, use NewFailureRun.
type FailureRun struct {
	log     *slog.Logger
	msg     string // the Warn's message: what is failing and what happens meanwhile
	okMsg   string // the Info's message when it works again
	now     func() time.Time
	failing atomic.Bool // fast path for OK while all is well
	mu      sync.Mutex
	n       uint64
	since   time.Time
	last    error
}

// NewFailureRun logs failures as msg (e.g. "queue calls failing; backing off") and the end of a
// run as okMsg (e.g. "queue calls succeed again"), on log (nil: nowhere).
func NewFailureRun(log *slog.Logger, msg, okMsg string) *FailureRun {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &FailureRun{log: log, msg: msg, okMsg: okMsg, now: time.Now}
}

// Fail counts a failure; the first of a run is logged with err and attrs. It reports whether
// this failure began the run.
func (f *FailureRun) Fail(err error, attrs ...any) (first bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last = err
	f.n++
	if f.n > 1 {
		return false
	}
	f.since = f.now()
	f.failing.Store(true)
	f.log.Warn(f.msg, append([]any{"err", err}, attrs...)...)
	return true
}

// OK ends the run of failures, if one is in progress, logging how many failed.
func (f *FailureRun) OK(attrs ...any) {
	if !f.failing.Load() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		return
	}
	f.log.Info(f.okMsg, append([]any{"failed", f.n, "for", f.now().Sub(f.since).Round(time.Millisecond), "last_err", f.last}, attrs...)...)
	f.n, f.last, f.since = 0, nil, time.Time{}
	f.failing.Store(false)
}

// State is the run in progress: how many failed, since when, the last error; n is 0 when the
// last attempt succeeded (or none failed yet).
func (f *FailureRun) State() (n uint64, since time.Time, last error) {
	if !f.failing.Load() {
		return 0, time.Time{}, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n, f.since, f.last
}
