package processor

import (
	"context"
	"errors"
	"time"
)

// Source is what Run consumes: a log of records read in order and acknowledged up to a sequence
// number. Package spoolsource adapts the spool (spool.Log, Disk and Memory) to it. A source that
// also has Depth() int64 (records not yet acknowledged) lets Run tell "caught up" (lag 0) from
// "between two batches".
type Source interface {
	// Next blocks until at least one record after the last one returned exists and returns up to
	// max of them in sequence order (Input.Record.Seq). An error wrapping ErrSourceClosed ends Run;
	// any other is logged and Next is called again after a backoff.
	Next(ctx context.Context, max int) ([]Input, error)
	// Commit acknowledges every record with Seq <= seq.
	Commit(seq uint64) error
}

// ErrSourceClosed is wrapped by the error of a Source's Next when the source is closed for good.
var ErrSourceClosed = errors.New("source closed")

type depthReporter interface{ Depth() int64 }

// Run consumes src until ctx ends: Next → Process → Commit, reading and decoding the next batch
// while the current one is applied. The source is acknowledged only after the sink applied the
// batch; when ctx ends during a batch, the batch (and the one read ahead) is abandoned
// unacknowledged (the sink's transaction is rolled back or never started) and Run returns nil
// once its reader goroutine has stopped. Abandoned entries are delivered again when the source is
// reopened (a spool replays from its cursor on Open), not by calling Run again on the same
// source. A failed Commit is logged and left to the next one, which covers it; the sink
// recognises the records if they come back. Run returns an error only if the source is closed
// (Next's error, wrapping ErrSourceClosed).
func (p *Processor) Run(ctx context.Context, src Source) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if dr, ok := src.(depthReporter); ok {
		p.depth.Store(&dr)
		defer p.depth.Store(nil)
	}
	batches := make(chan prepared)
	readErr := make(chan error, 1)
	go func() { readErr <- p.read(ctx, src, batches) }()
	defer func() {
		cancel()
		for range batches { // let the reader finish
		}
	}()
	// The set-aside summaries due while no batch comes are logged by this timer, the rest when
	// Run ends.
	flush := time.NewTimer(time.Hour)
	flush.Stop()
	defer func() { p.setAsides.flush(p.cfg.Now(), true) }()
	defer flush.Stop()
	for {
		var due <-chan time.Time
		if d, ok := p.setAsides.due(p.cfg.Now()); ok {
			flush.Reset(d)
			due = flush.C
		}
		var pb prepared
		var ok bool
		select {
		case pb, ok = <-batches:
		case <-due:
			p.setAsides.flush(p.cfg.Now(), false)
			continue
		}
		flush.Stop()
		if !ok {
			return <-readErr
		}
		if !p.processAll(ctx, pb) {
			return nil // only ctx ends process: abandon the batch unacknowledged
		}
		if err := src.Commit(pb.last); err != nil {
			p.log.Warn("acknowledge source", "seq", pb.last, "err", err)
		}
	}
}

// processAll processes pb until no record of it is deferred: a source with one cursor cannot
// hand a record back, so a deferred record holds the batch (sinks used with Run do not defer).
// It reports false if ctx ended.
func (p *Processor) processAll(ctx context.Context, pb prepared) bool {
	for decodeTime := pb.decodeTime; ; decodeTime = 0 {
		out, err := p.process(ctx, pb.b, decodeTime)
		if err != nil {
			return false
		}
		var wait time.Duration
		deferred := false
		for _, o := range out {
			if o.Result == Deferred {
				deferred, wait = true, max(wait, o.After)
			}
		}
		if !deferred {
			return true
		}
		if p.cfg.Sleep(ctx, max(wait, p.cfg.BackoffMin)) != nil {
			return false
		}
	}
}

type prepared struct {
	b          *Batch
	last       uint64 // the last record's seq
	decodeTime time.Duration
}

// read feeds Run with decoded batches, one ahead of the one being applied (out is unbuffered).
// It returns nil when ctx ends and Next's error when the source is closed (ErrSourceClosed); it
// closes out either way.
func (p *Processor) read(ctx context.Context, src Source, out chan<- prepared) error {
	defer close(out)
	failures := 0
	for {
		in, err := src.Next(ctx, p.cfg.BatchSize)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, ErrSourceClosed) {
				return err
			}
			p.readFails.Fail(err)
			if p.cfg.Sleep(ctx, p.backoff(failures)) != nil {
				return nil
			}
			failures++
			continue
		}
		p.readFails.OK()
		failures = 0
		if len(in) == 0 {
			continue
		}
		start := p.cfg.Now()
		pb := prepared{last: in[len(in)-1].Record.Seq, b: p.newBatch(in)}
		pb.decodeTime = p.cfg.Now().Sub(start)
		select {
		case out <- pb:
		case <-ctx.Done():
			return nil
		}
	}
}
