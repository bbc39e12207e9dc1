package coapserver

import (
	"context"
	"fmt"
	"sync/atomic"
)

// inflightCounter counts the requests handed to the handler and not yet answered, and wakes a
// waiting Shutdown when the count reaches zero (no polling).
type inflightCounter struct {
	n    atomic.Int64
	wait atomic.Pointer[chan struct{}] // set while Shutdown waits for zero
}

// Add adds d and returns the new count; reaching zero wakes a waiting Shutdown.
func (c *inflightCounter) Add(d int64) int64 {
	n := c.n.Add(d)
	if n == 0 {
		if ch := c.wait.Load(); ch != nil {
			select {
			case *ch <- struct{}{}:
			default:
			}
		}
	}
	return n
}

// Load is the current count.
func (c *inflightCounter) Load() int64 { return c.n.Load() }

// waitZero blocks until the count is zero or ctx ends. No request may be added meanwhile.
func (c *inflightCounter) waitZero(ctx context.Context) error {
	ch := make(chan struct{}, 1)
	c.wait.Store(&ch)
	defer c.wait.Store(nil)
	for c.n.Load() > 0 {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Shutdown stops reading datagrams, waits until every request already handed to the handler has
// been answered or ctx ends, then sends what is queued and closes the sockets (Close). It
// returns an error naming the requests still unanswered when ctx ended first (they were closed
// without an answer). Idempotent; Serve returns once the readers stopped.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopReading()
	s.readers.Wait()
	var err error
	if werr := s.ep.inflight.waitZero(ctx); werr != nil {
		err = fmt.Errorf("coapserver: %d requests unanswered at shutdown: %w", s.ep.Inflight(), werr)
	}
	s.Close()
	return err
}

// WaitIdle blocks until no request is in flight (every one handed to the handler has been
// answered) or ctx ends, whichever comes first; it returns ctx's error in the second case. The
// transport must have stopped feeding the endpoint: no request may start meanwhile.
func (e *Endpoint) WaitIdle(ctx context.Context) error { return e.inflight.waitZero(ctx) }
