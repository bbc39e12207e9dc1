// Package processor turns telemetry records into thing state: it decodes each record's payload
// into properties by its Content-Format (decode.go: JSON, CBOR in decode_cbor.go, SenML; a SenML
// pack's readings keep the device's times, senml.go), coalesces the records of one thing in a batch into one
// update, hands the batch to a Sink (the local registry, later AWS IoT) and classifies what went
// wrong.
//
// The core is sink- and source-independent: Process takes a batch of records (Input: a record
// its driver decoded once, or the raw bytes of one it could not decode, with the reason) and
// returns one Outcome per record (Applied, Duplicate, SetAside with a reason, or Deferred: the sink
// hands it back to be tried after Outcome.After). Drivers move
// records in and acknowledge them: Run is the local one, consuming a Source (Next → Process →
// Commit, the source acknowledged only after the sink succeeded; package spoolsource adapts the
// spool to it); the SQS consumer and the Lambda handler (package consume) call Process and delete
// messages or report batchItemFailures from the outcomes.
//
// Errors. A record that can never be applied is set aside with its reason and never blocks the
// records behind it: an undecodable record, a thing or type name outside ^[a-zA-Z0-9:_-]{1,128}$,
// an unsupported content format, a payload that is not one JSON object (or CBOR map, or SenML
// pack with a JSON form) or is nested deeper than
// MaxShadowDepth, a payload whose own state exceeds MaxShadowBytes (found here), and what the sink
// finds per record (a thing that exists with another type, a merged shadow over the limits). Any
// error the Sink returns for the batch as a whole is transient (a database or network failure,
// throttling): the batch is retried with exponential backoff and jitter, capped, until it succeeds
// or the context ends, and the source is not acknowledged meanwhile.
//
// Logging: a run of sink failures (or of failed reads of Run's source) is logged once when it
// starts and once when it ends, with how many failed (ops.FailureRun), not once per retry; the
// records set aside are summarised by reason (setaside_log.go): the first of a reason is logged
// at once, the later ones as one line per reason per LogInterval (a minute) with their count and
// the first one's (gw, seq, thing) — when the interval ends, by Run's timer when idle (a driver
// calling Process gets them at its next batch). Stats reports a batch being retried (Retrying,
// LastError).
//
// Idempotency and order are the Doc's rules: per-leaf last-writer-wins by received_at, so applying
// a record twice, or an older record after a newer one, changes nothing it should not. Sinks that
// count messages also need to know which records they already applied (see registry).
//
// Metrics (registered on the Registerer given to New):
//
//	coapgw_processor_records_total{result="applied|duplicate|set_aside|deferred"}
//	coapgw_processor_batches_total     counter   batches applied
//	coapgw_processor_batch_seconds     histogram payload decoding + apply (retries included)
//	                                             per batch
//	coapgw_processor_retries_total     counter   failed sink calls that were retried
//	coapgw_processor_lag_seconds       gauge     now − received_at of the oldest record not yet
//	                                             applied (between batches: of the newest applied);
//	                                             0 when idle and caught up
//
// Configuration (Config): BatchSize, the most records Run takes from its source at once, is
// --processor-batch (COAPGW_PROCESSOR_BATCH, default 20000); BackoffMin and BackoffMax (default
// 100ms and 30s) bound the waits between retries of a failed batch (--processor-backoff-min and
// --processor-backoff-max). SeedShadow (--seed-shadow, seed_shadow) adds the 2018 CoAP-to-AWS-IoT
// processor's online, uuid and type keys to reported state (seedshadow.go). Decoders, Sleep, Now,
// OnApplied and LogInterval are for wiring and tests.
package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgw/coapgw/internal/ops"
)

// Sink applies batches. Apply must be atomic per batch as far as the caller can tell: either it
// returns an error (transient: nothing was acknowledged, the same batch will be offered again) or
// one Outcome per Batch.Items entry, in the same order. Items with Err set must come back as
// SetAside (with Err's text as the reason, or the sink's own). A sink that can see a record for the
// second time (redelivery after a crash) reports it as Duplicate and does not apply it again.
type Sink interface {
	Apply(ctx context.Context, b *Batch) ([]Outcome, error)
}

// Config configures a Processor. The zero value gives the defaults.
type Config struct {
	// BatchSize is the most records taken from the source at once (default 20000).
	BatchSize int
	// BackoffMin and BackoffMax bound the delay between retries of a failed batch: it doubles
	// from BackoffMin up to BackoffMax, and each wait is drawn uniformly from [d/2, d].
	BackoffMin, BackoffMax time.Duration
	// Decoders by content format (default DefaultDecoders()).
	Decoders Decoders
	// Sleep waits for d or until ctx ends (returning ctx's error); default a timer. Tests fake it.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock for lag and durations (default time.Now).
	Now func() time.Time
	// OnApplied, if set, is called after each applied batch with the names of the things that
	// had a record applied (for the dashboard's live updates). It must not block.
	OnApplied func(things []string)
	// SeedShadow (--seed-shadow) adds the 2018 processor's keys to every thing's reported
	// state: online "true", uuid (the thing name) and type (seedshadow.go).
	SeedShadow bool
	// LogInterval is how often at most the records set aside for one reason are logged, as one
	// line with their count (default 1 minute; setaside_log.go).
	LogInterval time.Duration
}

func (c *Config) setDefaults() {
	if c.BatchSize == 0 {
		c.BatchSize = 20000
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = 100 * time.Millisecond
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = 30 * time.Second
	}
	if c.Decoders == nil {
		c.Decoders = DefaultDecoders()
	}
	if c.Sleep == nil {
		c.Sleep = sleep
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.LogInterval <= 0 {
		c.LogInterval = time.Minute
	}
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("processor batch size %d must be positive", c.BatchSize))
	}
	if c.BackoffMin < 0 || c.BackoffMax < 0 {
		errs = append(errs, errors.New("processor backoff must not be negative"))
	}
	if c.BackoffMin > 0 && c.BackoffMax > 0 && c.BackoffMax < c.BackoffMin {
		errs = append(errs, fmt.Errorf("processor backoff max %v is below min %v", c.BackoffMax, c.BackoffMin))
	}
	return errors.Join(errs...)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Processor is the core. Process may be called from one goroutine at a time.
type Processor struct {
	cfg  Config
	sink Sink
	log  *slog.Logger
	m    *metrics

	// lagRef is the received_at (Unix ns) the lag is measured from: the oldest record of the
	// batch being applied, or the newest applied; 0 = nothing applied yet.
	lagRef   atomic.Int64
	inflight atomic.Bool                   // a batch is being applied
	depth    atomic.Pointer[depthReporter] // Run's source, if it reports its depth
	retrying atomic.Bool

	mu        sync.Mutex
	lastError string

	// Runs of failures, each logged when it starts and when it ends (with the count), not per
	// failure: the sink's, the source's reads.
	sinkFails, readFails *ops.FailureRun
	setAsides            *setAsideLog
}

// New returns a processor applying to sink. It validates cfg and registers the metrics; it does
// no I/O.
func New(cfg Config, sink Sink, log *slog.Logger, reg prometheus.Registerer) (*Processor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if sink == nil {
		return nil, errors.New("processor: nil sink")
	}
	cfg.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Processor{cfg: cfg, sink: sink, log: log,
		sinkFails: ops.NewFailureRun(log, "sink failing; retrying the batch with backoff, nothing is acknowledged meanwhile", "sink succeeds again"),
		readFails: ops.NewFailureRun(log, "reading the source failing; retrying with backoff", "reading the source succeeds again"),
		setAsides: newSetAsideLog(log, cfg.LogInterval)}
	m, err := newMetrics(reg, p.lagSeconds)
	if err != nil {
		return nil, fmt.Errorf("processor metrics: %w", err)
	}
	p.m = m
	return p, nil
}

// Process decodes the payloads of inputs and coalesces them, applies them to the sink, retrying
// transient failures with backoff until the sink succeeds or ctx ends, and returns one outcome
// per input. Its only error is ctx's: the batch was abandoned and nothing of it may be
// acknowledged.
func (p *Processor) Process(ctx context.Context, inputs []Input) ([]Outcome, error) {
	if len(inputs) == 0 {
		return nil, nil
	}
	start := p.cfg.Now()
	b := p.newBatch(inputs)
	return p.process(ctx, b, p.cfg.Now().Sub(start))
}

// process applies a decoded batch; decoding it took decodeTime.
func (p *Processor) process(ctx context.Context, b *Batch, decodeTime time.Duration) ([]Outcome, error) {
	start := p.cfg.Now().Add(-decodeTime)
	oldest, newest := b.receivedRange()
	if !oldest.IsZero() {
		p.lagRef.Store(oldest.UnixNano())
	}
	p.inflight.Store(true)
	defer p.inflight.Store(false)
	out, err := p.apply(ctx, b)
	if err != nil {
		return nil, err
	}
	markRepeats(b, out)
	var n [Deferred + 1]int
	for _, o := range out {
		if o.Result <= Deferred {
			n[o.Result]++
		}
	}
	p.setAsides.batch(p.cfg.Now(), b, out) // summarised by reason (setaside_log.go)
	p.m.applied.Add(float64(n[Applied]))
	p.m.duplicate.Add(float64(n[Duplicate]))
	p.m.setAside.Add(float64(n[SetAside]))
	p.m.deferred.Add(float64(n[Deferred]))
	p.m.batches.Inc()
	p.m.batchSeconds.Observe(p.cfg.Now().Sub(start).Seconds())
	if !newest.IsZero() {
		p.lagRef.Store(newest.UnixNano())
	}
	if p.cfg.OnApplied != nil && n[Applied] > 0 {
		p.cfg.OnApplied(appliedThings(b, out))
	}
	return out, nil
}

// markRepeats reports as Duplicate every Applied record whose (gw, seq) already came earlier in
// the same batch. A queue can hold one record twice at once (a gateway killed before it saved its
// cursor sends again what SQS had accepted; SQS itself delivers at least once), and a sink that
// compares each record with the state before the batch sees both copies change it: the effect is
// the same, but the count of applied records must not double. The spool, the local source, has
// one gateway and rising sequence numbers, which a single pass recognises without a map.
func markRepeats(b *Batch, out []Outcome) {
	rising := true
	for i := 1; i < len(b.Items) && rising; i++ {
		x, y := &b.Items[i-1], &b.Items[i]
		rising = y.Seq > x.Seq && y.Record.GW == x.Record.GW
	}
	if rising {
		return
	}
	type id struct {
		gw  string
		seq uint64
	}
	seen := make(map[id]struct{}, len(b.Items))
	for i := range b.Items {
		it := &b.Items[i]
		if it.Err != nil {
			continue
		}
		k := id{it.Record.GW, it.Seq}
		if _, again := seen[k]; again {
			if out[i].Result == Applied {
				out[i] = Outcome{Result: Duplicate}
			}
			continue
		}
		seen[k] = struct{}{}
	}
}

func appliedThings(b *Batch, out []Outcome) []string {
	var names []string
	for _, u := range b.Updates {
		for _, i := range u.Items {
			if out[i].Result == Applied {
				names = append(names, u.Thing)
				break
			}
		}
	}
	return names
}

func (p *Processor) apply(ctx context.Context, b *Batch) ([]Outcome, error) {
	defer p.retrying.Store(false)
	for attempt := 0; ; attempt++ {
		out, err := p.sink.Apply(ctx, b)
		if err == nil && len(out) != len(b.Items) {
			err = fmt.Errorf("sink returned %d outcomes for %d records", len(out), len(b.Items))
		}
		if err == nil {
			p.sinkFails.OK()
			return out, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		p.m.retries.Inc()
		p.retrying.Store(true)
		p.mu.Lock()
		p.lastError = err.Error()
		p.mu.Unlock()
		d := p.backoff(attempt)
		if !p.sinkFails.Fail(err, "records", len(b.Items)) {
			p.log.Debug("sink failed again", "err", err, "attempt", attempt+1, "wait", d, "records", len(b.Items))
		}
		if err := p.cfg.Sleep(ctx, d); err != nil {
			return nil, err
		}
	}
}

// backoff is the wait before retry attempt+1: BackoffMin·2^attempt capped at BackoffMax, with
// jitter drawn uniformly from [d/2, d].
func (p *Processor) backoff(attempt int) time.Duration {
	d := p.cfg.BackoffMax
	if attempt < 62 {
		if e := p.cfg.BackoffMin << attempt; e > 0 && e < d {
			d = e
		}
	}
	return d/2 + rand.N(d/2+1)
}

// Lag is how far behind the processor is: now − received_at of the oldest record of the batch
// being applied; between batches, while the source (Run's, if it reports its depth) still holds
// records, now − received_at of the newest record applied; 0 when idle and caught up.
func (p *Processor) Lag() time.Duration {
	ref := p.lagRef.Load()
	if ref == 0 {
		return 0
	}
	if !p.inflight.Load() {
		dr := p.depth.Load()
		if dr == nil || (*dr).Depth() == 0 {
			return 0
		}
	}
	return max(0, p.cfg.Now().Sub(time.Unix(0, ref)))
}

func (p *Processor) lagSeconds() float64 { return p.Lag().Seconds() }

// Stats is a snapshot for the dashboard's status panel.
type Stats struct {
	Lag        time.Duration
	Batches    int64
	Applied    int64
	Duplicates int64
	SetAside   int64
	Retries    int64
	Retrying   bool   // the current batch failed and is waiting for its next attempt
	LastError  string // the last sink error, "" if none yet
}

// Stats reports the processor's counters since New.
func (p *Processor) Stats() Stats {
	p.mu.Lock()
	lastErr := p.lastError
	p.mu.Unlock()
	return Stats{
		Lag:        p.Lag(),
		Batches:    p.m.nBatches.Load(),
		Applied:    p.m.nApplied.Load(),
		Duplicates: p.m.nDuplicate.Load(),
		SetAside:   p.m.nSetAside.Load(),
		Retries:    p.m.nRetries.Load(),
		Retrying:   p.retrying.Load(),
		LastError:  lastErr,
	}
}
