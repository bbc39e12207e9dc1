package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgw/coapgw/internal/spool"
)

// appendState follows whether spool appends succeed. Failures are logged once per change of
// state (the first failure, a different kind of failure, the recovery with how many failed)
// instead of once per request, and the state is the gateway's readiness: StorageErr.
type appendState struct {
	log      *slog.Logger
	now      func() time.Time
	quiet    time.Duration // StorageErr clears after this long without a failure
	failing  atomic.Bool   // fast path for the successes of a healthy spool
	mu       sync.Mutex
	kind     string // "spool full" or "spool unavailable"; "" while appends succeed
	err      error  // the last failure
	count    uint64 // failures since kind began
	since    time.Time
	lastFail time.Time
}

// noteAppend records the outcome of one spool append.
func (h *Handler) noteAppend(err error) {
	switch {
	case err == nil:
		h.appends.ok()
	case !errors.Is(err, spool.ErrClosed):
		h.appends.fail(err)
	}
}

// StorageErr is nil while spool appends succeed; after one failed (the spool full, the disk
// failing, no file descriptor left) it says why, until an append succeeds or none has failed
// for RetryAfter. The gateway's /readyz answers 503 with it.
func (h *Handler) StorageErr() error { return h.appends.StorageErr() }

// ok records a successful append.
func (s *appendState) ok() {
	if !s.failing.Load() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kind == "" {
		return
	}
	s.log.Info("spool appends succeed again", "failed", s.count, "reason", s.kind, "for", s.now().Sub(s.since).Round(time.Millisecond))
	s.kind, s.err, s.count = "", nil, 0
	s.failing.Store(false)
}

// fail records an append that failed with err (not ErrClosed: a stop is no failure).
func (s *appendState) fail(err error) {
	kind := "spool unavailable"
	if errors.Is(err, spool.ErrFull) {
		kind = "spool full"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.kind != kind {
		if s.kind != "" {
			s.log.Info("spool append failures change", "failed", s.count, "reason", s.kind, "now", kind)
		}
		s.log.Warn("spool appends failing; devices get 5.03 and /readyz 503 until one succeeds", "reason", kind, "err", err)
		s.kind, s.count, s.since = kind, 0, now
		s.failing.Store(true)
	}
	s.err = err
	s.count++
	s.lastFail = now
}

// StorageErr is nil while appends succeed; after a failure it says why, until an append
// succeeds or none has failed for quiet (so that a gateway a load balancer took out of
// service for it is tried again).
func (s *appendState) StorageErr() error {
	if !s.failing.Load() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kind == "" || s.now().Sub(s.lastFail) > s.quiet {
		return nil
	}
	return fmt.Errorf("spool appends failing (%d since %s): %w", s.count, s.since.UTC().Format(time.RFC3339), s.err)
}
