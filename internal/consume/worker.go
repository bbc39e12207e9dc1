package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgw/coapgw/internal/processor"
)

// sqsAPI is the part of the SQS client the worker uses.
type sqsAPI interface {
	ReceiveMessage(ctx context.Context, in *awssqs.ReceiveMessageInput, optFns ...func(*awssqs.Options)) (*awssqs.ReceiveMessageOutput, error)
	DeleteMessageBatch(ctx context.Context, in *awssqs.DeleteMessageBatchInput, optFns ...func(*awssqs.Options)) (*awssqs.DeleteMessageBatchOutput, error)
	ChangeMessageVisibilityBatch(ctx context.Context, in *awssqs.ChangeMessageVisibilityBatchInput, optFns ...func(*awssqs.Options)) (*awssqs.ChangeMessageVisibilityBatchOutput, error)
}

var _ sqsAPI = (*awssqs.Client)(nil)

// SQS limits the worker works within.
const (
	maxBatchEntries = 10               // entries per *Batch call and messages per receive
	maxVisibility   = 12 * time.Hour   // the longest visibility timeout
	maxWaitTime     = 20 * time.Second // the longest long poll
)

// Config configures a Worker. Zero durations and counts take the defaults.
type Config struct {
	QueueURL string // required
	// Pollers is the number of concurrent ReceiveMessage long polls (default 4).
	Pollers int
	// WaitTime is the long-polling wait of each receive (default and maximum 20s).
	WaitTime time.Duration
	// MaxMessages is the most messages per receive (default and maximum 10).
	MaxMessages int
	// VisibilityTimeout is requested on every receive (default 60s): the time a batch has to
	// be processed and acknowledged before SQS hands its messages out again.
	VisibilityTimeout time.Duration
	// BatchSize is the most messages handed to the processor at once (default 1000); bigger
	// batches coalesce more records of one thing into one shadow update.
	BatchSize int
	// BatchWait is how long a batch may gather messages after its first one (default 250ms).
	BatchWait time.Duration
	// BackoffMin and BackoffMax bound the visibility delay of messages whose batch failed
	// transiently: BackoffMin·2^(receives−1) capped at BackoffMax, with jitter (defaults 1s, 5m).
	BackoffMin, BackoffMax time.Duration
	// SetAsideVisibility is the visibility given to set-aside messages (default 0: at once) so
	// that the redrive policy moves them to the DLQ after maxReceiveCount receives.
	SetAsideVisibility time.Duration
	// StopTimeout bounds how long the batch being processed may still take after Serve's
	// context ends (default 15s); it is abandoned (its messages released) after that.
	StopTimeout time.Duration
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Pollers == 0 {
		c.Pollers = 4
	}
	if c.MaxMessages == 0 {
		c.MaxMessages = maxBatchEntries
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	def(&c.WaitTime, maxWaitTime)
	def(&c.VisibilityTimeout, 60*time.Second)
	def(&c.BatchWait, 250*time.Millisecond)
	def(&c.BackoffMin, time.Second)
	def(&c.BackoffMax, 5*time.Minute)
	def(&c.StopTimeout, 15*time.Second)
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("consume: "+format, args...)) }
	if c.QueueURL == "" {
		bad("queue URL is required")
	} else if u, err := url.Parse(c.QueueURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || strings.Trim(u.Path, "/") == "" {
		bad("queue URL %q is not an http(s) URL with a queue path", c.QueueURL)
	}
	if c.Pollers < 0 || c.Pollers > 64 {
		bad("pollers %d: want 1–64", c.Pollers)
	}
	if c.MaxMessages < 0 || c.MaxMessages > maxBatchEntries {
		bad("max messages %d: want 1–%d", c.MaxMessages, maxBatchEntries)
	}
	if c.WaitTime < 0 || c.WaitTime > maxWaitTime {
		bad("wait time %v: want 0–%v", c.WaitTime, maxWaitTime)
	}
	if c.VisibilityTimeout < 0 || c.VisibilityTimeout > maxVisibility || c.VisibilityTimeout > 0 && c.VisibilityTimeout < 10*time.Second {
		bad("visibility timeout %v: want 10s–12h", c.VisibilityTimeout)
	}
	if c.BatchSize < 0 || c.BatchSize > 100_000 {
		bad("batch size %d: want 1–100000", c.BatchSize)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"batch wait", c.BatchWait}, {"backoff min", c.BackoffMin}, {"backoff max", c.BackoffMax}, {"stop timeout", c.StopTimeout}} {
		if d.v < 0 {
			bad("%s %v must not be negative", d.name, d.v)
		}
	}
	if c.BackoffMax > maxVisibility || c.SetAsideVisibility < 0 || c.SetAsideVisibility > maxVisibility {
		bad("visibility delays must be within 0–12h")
	}
	if c.BackoffMin > 0 && c.BackoffMax > 0 && c.BackoffMax < c.BackoffMin {
		bad("backoff max %v is below min %v", c.BackoffMax, c.BackoffMin)
	}
	return errors.Join(errs...)
}

// Worker consumes an SQS queue into a processor until its context ends.
type Worker struct {
	cfg  Config
	api  sqsAPI
	proc Processor
	log  *slog.Logger
	m    *metrics
	url  *string
	now  func() time.Time
}

// New returns a worker on an SQS client made from awsCfg (credentials from the SDK default
// chain). It validates cfg and does no I/O.
func New(cfg Config, awsCfg aws.Config, proc Processor, log *slog.Logger, reg prometheus.Registerer) (*Worker, error) {
	return newWorker(cfg, awssqs.NewFromConfig(awsCfg), proc, log, reg)
}

func newWorker(cfg Config, api sqsAPI, proc Processor, log *slog.Logger, reg prometheus.Registerer) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if proc == nil {
		return nil, errors.New("consume: nil processor")
	}
	cfg.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("consume metrics: %w", err)
	}
	return &Worker{cfg: cfg, api: api, proc: proc, log: log, m: m, url: aws.String(cfg.QueueURL), now: time.Now}, nil
}

// message is one received SQS message.
type message struct {
	id, receipt string
	receives    int       // ApproximateReceiveCount, this receive included
	received    time.Time // when this worker received it
	input       processor.Input
	err         error // the body is not a record: the message is set aside
}

// Serve receives, processes and acknowledges messages until ctx ends. It then starts no new
// receive, finishes the batch being processed (for up to StopTimeout), lets the long polls in
// flight complete (a cancelled receive would hide its messages for the whole visibility
// timeout), releases every message it holds (visibility 0) and returns nil once every goroutine
// it started has stopped.
func (w *Worker) Serve(ctx context.Context) error {
	// Receives run on their own context: cancelled only if they outlive the stop by far.
	recvCtx, cancelRecv := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRecv()
	ch := make(chan []*message, w.cfg.Pollers)
	var wg sync.WaitGroup
	for range w.cfg.Pollers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.poll(ctx, recvCtx, ch)
		}()
	}
	w.log.Info("consuming", "queue", w.cfg.QueueURL, "pollers", w.cfg.Pollers, "batch_size", w.cfg.BatchSize)
	for ctx.Err() == nil {
		if batch := w.collect(ctx, ch); len(batch) > 0 {
			w.handle(ctx, batch)
		}
	}
	bound := time.AfterFunc(w.cfg.WaitTime+5*time.Second, cancelRecv)
	defer bound.Stop()
	go func() { wg.Wait(); close(ch) }()
	var held []*message
	for ms := range ch { // what the pollers received but no batch took
		held = append(held, ms...)
	}
	if len(held) > 0 {
		w.changeVisibility(ctx, held, func(*message) time.Duration { return 0 }, "released")
	}
	w.log.Info("stopped consuming", "released", len(held))
	return nil
}

// poll long-polls the queue and passes what it receives to ch until stop ends; the calls use
// ctx.
func (w *Worker) poll(stop, ctx context.Context, ch chan<- []*message) {
	failures := 0
	in := &awssqs.ReceiveMessageInput{
		QueueUrl:                    w.url,
		MaxNumberOfMessages:         int32(w.cfg.MaxMessages),
		WaitTimeSeconds:             int32(w.cfg.WaitTime / time.Second),
		VisibilityTimeout:           int32(w.cfg.VisibilityTimeout / time.Second),
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount},
	}
	for stop.Err() == nil {
		out, err := w.api.ReceiveMessage(ctx, in)
		if err != nil {
			if ctx.Err() != nil || stop.Err() != nil {
				return
			}
			w.m.sqsErrors.WithLabelValues("ReceiveMessage").Inc()
			d := backoff(w.cfg.BackoffMin, 30*time.Second, failures)
			failures++
			w.log.Warn("receive messages", "err", err, "retry_in", d)
			if sleep(stop, d) != nil {
				return
			}
			continue
		}
		failures = 0
		if len(out.Messages) == 0 {
			continue
		}
		now := w.now()
		ms := make([]*message, len(out.Messages))
		for i, sm := range out.Messages {
			m := &message{id: aws.ToString(sm.MessageId), receipt: aws.ToString(sm.ReceiptHandle), received: now, receives: 1}
			if n, err := strconv.Atoi(sm.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)]); err == nil && n > 0 {
				m.receives = n
			}
			m.input, m.err = decodeBody(aws.ToString(sm.Body))
			ms[i] = m
		}
		w.m.received.Add(float64(len(ms)))
		w.m.inflight.Add(float64(len(ms)))
		select {
		case ch <- ms:
		case <-stop.Done():
			ch <- ms // Serve drains ch after the pollers stopped and releases these
			return
		}
	}
}

// collect waits for the first messages, then gathers more for up to BatchWait or until the
// batch is full.
func (w *Worker) collect(ctx context.Context, ch <-chan []*message) []*message {
	var batch []*message
	select {
	case batch = <-ch:
	case <-ctx.Done():
		return nil
	}
	t := time.NewTimer(w.cfg.BatchWait)
	defer t.Stop()
	for len(batch) < w.cfg.BatchSize {
		select {
		case ms := <-ch:
			batch = append(batch, ms...)
		case <-t.C:
			return batch
		case <-ctx.Done():
			return batch
		}
	}
	return batch
}

// handle processes one batch and acknowledges each message by its outcome.
func (w *Worker) handle(ctx context.Context, batch []*message) {
	w.m.batchMessages.Observe(float64(len(batch)))
	var (
		inputs   []processor.Input
		owners   []*message
		setAside []*message
		reasons  = make(map[*message]string)
		oldest   = batch[0].received
	)
	// Messages received more often first: records deferred before (throttled) get this
	// consumer's share of the control-plane budget before fresh ones, so a record is deferred a
	// few times at most, however long the backlog. The order of a thing's records is the
	// processor's (by received_at), whatever the order of the messages.
	slices.SortStableFunc(batch, func(a, b *message) int { return b.receives - a.receives })
	for _, m := range batch {
		oldest = minTime(oldest, m.received)
		if m.err != nil {
			setAside = append(setAside, m)
			reasons[m] = "undecodable message: " + m.err.Error()
			continue
		}
		inputs = append(inputs, m.input)
		owners = append(owners, m)
	}
	var (
		deletes  []*message
		retry    []*message
		deferred []*message
		after    = make(map[*message]time.Duration)
	)
	if len(inputs) > 0 {
		// The batch must be done before its messages become visible again; on stop it gets
		// StopTimeout more, then it is abandoned.
		deadline := oldest.Add(w.cfg.VisibilityTimeout - w.cfg.VisibilityTimeout/6)
		pctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
		var (
			tmu   sync.Mutex
			timer *time.Timer
		)
		stopAfter := context.AfterFunc(ctx, func() {
			tmu.Lock()
			timer = time.AfterFunc(w.cfg.StopTimeout, cancel)
			tmu.Unlock()
		})
		out, err := w.proc.Process(pctx, inputs)
		stopAfter()
		tmu.Lock()
		if timer != nil {
			timer.Stop()
		}
		tmu.Unlock()
		cancel()
		switch {
		case err != nil:
			retry = owners
			w.log.Warn("batch not finished; its messages go back to the queue", "err", err, "messages", len(owners))
		case len(out) != len(inputs):
			retry = owners
			w.log.Error("processor returned the wrong number of outcomes", "outcomes", len(out), "records", len(inputs))
		default:
			for i, o := range out {
				m := owners[i]
				switch o.Result {
				case processor.SetAside:
					setAside = append(setAside, m)
					reasons[m] = o.Reason
					continue
				case processor.Deferred:
					deferred = append(deferred, m)
					after[m] = o.After
					continue
				}
				deletes = append(deletes, m)
			}
		}
	}
	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	if len(deletes) > 0 {
		run(func() { w.delete(ctx, deletes) })
	}
	if len(setAside) > 0 {
		for _, m := range setAside {
			logSetAside(w.log, m.id, m.receives, reasons[m])
		}
		run(func() {
			w.changeVisibility(ctx, setAside, func(*message) time.Duration { return w.cfg.SetAsideVisibility }, "set_aside")
		})
	}
	if len(deferred) > 0 {
		w.log.Info("records deferred (throttled); they come back when AWS has room", "records", len(deferred))
		run(func() {
			w.changeVisibility(ctx, deferred, func(m *message) time.Duration { return deferVisibility(after[m]) }, "deferred")
		})
	}
	if len(retry) > 0 {
		stopping := ctx.Err() != nil
		run(func() {
			w.changeVisibility(ctx, retry, func(m *message) time.Duration {
				if stopping {
					return 0
				}
				return backoff(w.cfg.BackoffMin, w.cfg.BackoffMax, m.receives-1)
			}, "retry")
		})
	}
	wg.Wait()
}

// ackContext is the context for acknowledgements: they are made even when the worker is
// stopping, for a bounded time.
func ackContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

// delete deletes messages, ten per DeleteMessageBatch, the calls in parallel.
func (w *Worker) delete(ctx context.Context, ms []*message) {
	ctx, cancel := ackContext(ctx)
	defer cancel()
	w.chunks(ms, func(chunk []*message) {
		entries := make([]types.DeleteMessageBatchRequestEntry, len(chunk))
		for i, m := range chunk {
			entries[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(m.receipt)}
		}
		out, err := w.api.DeleteMessageBatch(ctx, &awssqs.DeleteMessageBatchInput{QueueUrl: w.url, Entries: entries})
		failed := w.failed(chunk, err, outFailed(out, err, func(o *awssqs.DeleteMessageBatchOutput) []types.BatchResultErrorEntry { return o.Failed }), "DeleteMessageBatch")
		w.m.messages.WithLabelValues("deleted").Add(float64(len(chunk) - failed))
		w.m.inflight.Sub(float64(len(chunk)))
	})
}

// changeVisibility sets each message's visibility to vis(m), ten per call, the calls in
// parallel; result labels the messages in coapgw_consume_messages_total.
func (w *Worker) changeVisibility(ctx context.Context, ms []*message, vis func(*message) time.Duration, result string) {
	ctx, cancel := ackContext(ctx)
	defer cancel()
	w.chunks(ms, func(chunk []*message) {
		entries := make([]types.ChangeMessageVisibilityBatchRequestEntry, len(chunk))
		for i, m := range chunk {
			entries[i] = types.ChangeMessageVisibilityBatchRequestEntry{
				Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(m.receipt),
				VisibilityTimeout: int32(vis(m) / time.Second),
			}
		}
		out, err := w.api.ChangeMessageVisibilityBatch(ctx, &awssqs.ChangeMessageVisibilityBatchInput{QueueUrl: w.url, Entries: entries})
		w.failed(chunk, err, outFailed(out, err, func(o *awssqs.ChangeMessageVisibilityBatchOutput) []types.BatchResultErrorEntry { return o.Failed }), "ChangeMessageVisibilityBatch")
		// A message whose visibility could not be changed comes back when its visibility
		// timeout ends: the same result, later.
		w.m.messages.WithLabelValues(result).Add(float64(len(chunk)))
		w.m.inflight.Sub(float64(len(chunk)))
	})
}

func outFailed[T any](out *T, err error, get func(*T) []types.BatchResultErrorEntry) []types.BatchResultErrorEntry {
	if err != nil || out == nil {
		return nil
	}
	return get(out)
}

// failed logs and counts the failures of a batch call and returns how many entries failed.
func (w *Worker) failed(chunk []*message, err error, entries []types.BatchResultErrorEntry, op string) int {
	if err != nil {
		w.m.sqsErrors.WithLabelValues(op).Add(float64(len(chunk)))
		w.log.Warn("acknowledge messages; they come back when their visibility timeout ends", "op", op, "err", err, "messages", len(chunk))
		return len(chunk)
	}
	for _, f := range entries {
		w.m.sqsErrors.WithLabelValues(op).Inc()
		w.log.Warn("acknowledge message; it comes back when its visibility timeout ends", "op", op,
			"code", aws.ToString(f.Code), "message", aws.ToString(f.Message))
	}
	return len(entries)
}

// chunks calls f for each run of up to ten messages, concurrently, and waits.
func (w *Worker) chunks(ms []*message, f func([]*message)) {
	var wg sync.WaitGroup
	for start := 0; start < len(ms); start += maxBatchEntries {
		chunk := ms[start:min(start+maxBatchEntries, len(ms))]
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(chunk)
		}()
	}
	wg.Wait()
}

// deferVisibility is the visibility of a deferred message whose sink asked for after: at least
// after, in whole seconds (SQS's unit), plus up to a quarter more so that the deferred messages of
// one batch come back spread out; at most the longest visibility.
func deferVisibility(after time.Duration) time.Duration {
	d := max(after.Round(time.Second)+time.Second, time.Second)
	return min(d+rand.N(d/4+1), maxVisibility)
}

// backoff is min·2^attempt capped at max, drawn uniformly from [d/2, d].
func backoff(minD, maxD time.Duration, attempt int) time.Duration {
	d := maxD
	if attempt < 0 {
		attempt = 0
	}
	if attempt < 62 {
		if e := minD << attempt; e > 0 && e < d {
			d = e
		}
	}
	return d/2 + rand.N(d/2+1)
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

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
