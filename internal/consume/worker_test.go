package consume

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coapgw/coapgw/internal/envelope"
	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processortest"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

const queueURL = "https://sqs.us-east-1.amazonaws.com/123456789012/coapgw"

func body(t testing.TB, seq uint64, id string, sec int, payload string) string {
	t.Helper()
	r := processortest.Rec("gw-1", "sensor", id, t0.Add(time.Duration(sec)*time.Second), payload)
	r.Seq = seq
	b, err := envelope.Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newProcessor(t testing.TB, sink processor.Sink) *processor.Processor {
	t.Helper()
	p, err := processor.New(processor.Config{BackoffMin: time.Millisecond, BackoffMax: 10 * time.Millisecond}, sink, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs a worker until the returned stop is called (or the test ends).
func start(t testing.TB, w *Worker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Serve(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("worker did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func testConfig() Config {
	return Config{QueueURL: queueURL, WaitTime: time.Second, BatchWait: 20 * time.Millisecond, BackoffMin: time.Second}
}

// TestWorkerDeletesAfterApply: records are applied and their messages deleted; nothing else.
func TestWorkerDeletesAfterApply(t *testing.T) {
	q := newFakeSQS(0)
	for i := range 50 {
		q.send(body(t, uint64(i+1), fmt.Sprintf("dev-%d", i%5), i, fmt.Sprintf(`{"n":%d}`, i)))
	}
	sink := &processortest.Sink{}
	reg := prometheus.NewRegistry()
	w, err := newWorker(testConfig(), q, newProcessor(t, sink), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)
	waitFor(t, 10*time.Second, "an empty queue", func() bool { n, _ := q.sizes(); return n == 0 })
	stop()
	if got := sink.State("dev-3"); got != `{"n":48}` {
		t.Fatalf("dev-3 state %s", got)
	}
	if got := testutil.ToFloat64(w.m.messages.WithLabelValues("deleted")); got != 50 {
		t.Fatalf("deleted %v", got)
	}
	if got := testutil.ToFloat64(w.m.inflight); got != 0 {
		t.Fatalf("inflight %v", got)
	}
	if q.count("ChangeMessageVisibilityBatch") != 0 {
		t.Fatalf("visibility changed for good messages")
	}
}

// TestWorkerPoisonToDLQ: an undecodable message and a record the sink sets aside are left in
// the queue, visible at once, until the redrive policy moves them to the DLQ; the messages
// around them are applied meanwhile.
func TestWorkerPoisonToDLQ(t *testing.T) {
	q := newFakeSQS(2)
	q.send(body(t, 1, "a", 1, `{"x":1}`))
	q.send(`{"v":1,"gw":"gw-1"}`) // not a record
	q.send(body(t, 2, "conflict", 2, `{"x":1}`))
	q.send(body(t, 3, "b", 3, `{"x":1}`))
	sink := &rejectSink{thing: "conflict"}
	log, logs := newTestLogger()
	w, err := newWorker(testConfig(), q, newProcessor(t, sink), log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	start(t, w)
	waitFor(t, 10*time.Second, "poison in the DLQ", func() bool { n, d := q.sizes(); return n == 0 && d == 2 })
	// The reason reaches the operator: one WARN per set-aside receive, with the message id, the
	// receive count and why (TESTPLAN 26). m-2 is the undecodable body, m-3 the conflict.
	got := logs.setAsideByID(t)
	if len(got) != 2 || got["m-2"] == nil || got["m-3"] == nil {
		t.Fatalf("set-aside log lines for %v, want m-2 and m-3 only", slices.Collect(maps.Keys(got)))
	}
	for id, l := range got {
		if strings.Join(l.receives, ",") != "1,2" {
			t.Errorf("%s: set-aside logged at receives %v, want 1,2", id, l.receives)
		}
		for _, r := range l.reasons {
			switch id {
			case "m-2":
				if !strings.HasPrefix(r, "undecodable message: ") || len(r) <= len("undecodable message: ") {
					t.Errorf("m-2 reason %q, want the decoding error", r)
				}
			case "m-3":
				if r != "thing conflict exists with type other" {
					t.Errorf("m-3 reason %q, want the sink's", r)
				}
			}
		}
	}
	t.Logf("m-2 reason: %s", got["m-2"].reasons[0])
	if sink.State("a") == "" || sink.State("b") == "" {
		t.Fatal("records around the poison were not applied")
	}
	if got := testutil.ToFloat64(w.m.messages.WithLabelValues("set_aside")); got != 4 {
		t.Fatalf("set aside %v, want 4 (2 messages × 2 receives)", got)
	}
	for _, v := range q.visChanges {
		if v != 0 {
			t.Fatalf("set-aside visibility %d, want 0", v)
		}
	}
}

// rejectSink sets aside every record of one thing, every time (processortest.Sink would call a
// redelivered one a duplicate).
type rejectSink struct {
	processortest.Sink
	thing string
}

func (s *rejectSink) Apply(ctx context.Context, b *processor.Batch) ([]processor.Outcome, error) {
	out, err := s.Sink.Apply(ctx, b)
	for i := range out {
		if b.Items[i].Record.ID == s.thing {
			out[i] = processor.Outcome{Result: processor.SetAside, Reason: "thing " + s.thing + " exists with type other"}
		}
	}
	return out, err
}

// TestWorkerTransientBackoff: while the sink fails, the batch is abandoned before its
// visibility ends and its messages come back with a backoff; once the sink recovers they are
// applied and deleted.
func TestWorkerTransientBackoff(t *testing.T) {
	q := newFakeSQS(0)
	for i := range 5 {
		q.send(body(t, uint64(i+1), "dev", i, fmt.Sprintf(`{"n":%d}`, i)))
	}
	var failing atomic.Bool
	failing.Store(true)
	sink := &processortest.Sink{Fail: func(ctx context.Context, call int) error {
		if failing.Load() {
			return errors.New("throttled")
		}
		return nil
	}}
	w, err := newWorker(testConfig(), q, newProcessor(t, sink), nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	w.cfg.VisibilityTimeout = 1200 * time.Millisecond // the batch gets 1s (test only: SQS counts seconds)
	start(t, w)
	waitFor(t, 10*time.Second, "messages returned with backoff", func() bool {
		return testutil.ToFloat64(w.m.messages.WithLabelValues("retry")) >= 5
	})
	failing.Store(false)
	waitFor(t, 10*time.Second, "an empty queue", func() bool { n, _ := q.sizes(); return n == 0 })
	if got := sink.State("dev"); got != `{"n":4}` {
		t.Fatalf("state %s", got)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.visChanges) < 5 {
		t.Fatalf("visibility changes %v", q.visChanges)
	}
	for _, v := range q.visChanges {
		if v > 1 { // BackoffMin 1s, first receive: [0.5s, 1s] → 0 or 1 s
			t.Fatalf("backoff %d s after the first receive", v)
		}
	}
}

// TestWorkerGracefulStop: stopping while a batch is stuck ends within StopTimeout, releases the
// messages (visibility 0) and leaves no goroutine behind (goleak in TestMain).
func TestWorkerGracefulStop(t *testing.T) {
	q := newFakeSQS(0)
	for i := range 30 {
		q.send(body(t, uint64(i+1), "dev", i, `{"n":1}`))
	}
	entered := make(chan struct{}, 1)
	sink := &processortest.Sink{Fail: func(ctx context.Context, call int) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return ctx.Err()
	}}
	cfg := testConfig()
	cfg.StopTimeout = 100 * time.Millisecond
	cfg.BatchSize = 10
	w, err := newWorker(cfg, q, newProcessor(t, sink), nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)
	<-entered
	began := time.Now()
	stop()
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("stop took %v", d)
	}
	if testutil.ToFloat64(w.m.messages.WithLabelValues("deleted")) != 0 {
		t.Fatal("messages deleted though nothing was applied")
	}
	if got := testutil.ToFloat64(w.m.inflight); got != 0 {
		t.Fatalf("inflight %v after stop", got)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, v := range q.visChanges {
		if v != 0 {
			t.Fatalf("released with visibility %d", v)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{},
		{QueueURL: "not a url"},
		{QueueURL: queueURL, Pollers: -1},
		{QueueURL: queueURL, MaxMessages: 11},
		{QueueURL: queueURL, WaitTime: 21 * time.Second},
		{QueueURL: queueURL, VisibilityTimeout: time.Second},
		{QueueURL: queueURL, BackoffMin: time.Minute, BackoffMax: time.Second},
		{QueueURL: queueURL, SetAsideVisibility: 13 * time.Hour},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if err := (Config{QueueURL: queueURL}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func sqsEvent(bodies ...string) events.SQSEvent {
	var ev events.SQSEvent
	for i, b := range bodies {
		ev.Records = append(ev.Records, events.SQSMessage{MessageId: fmt.Sprintf("m-%d", i), Body: b,
			Attributes: map[string]string{"ApproximateReceiveCount": "1"}})
	}
	return ev
}

func failures(r events.SQSEventResponse) string {
	var ids []string
	for _, f := range r.BatchItemFailures {
		ids = append(ids, f.ItemIdentifier)
	}
	return strings.Join(ids, ",")
}

// TestHandlerBatchItemFailures: only the set-aside and undecodable messages are reported.
func TestHandlerBatchItemFailures(t *testing.T) {
	sink := &processortest.Sink{Reject: func(it *processor.Item) string {
		if it.Record.ID == "conflict" {
			return "thing conflict exists with type other"
		}
		return ""
	}}
	log, logs := newTestLogger()
	h, err := NewHandler(newProcessor(t, sink), log)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h.HandleSQSEvent(context.Background(), sqsEvent(
		body(t, 1, "a", 1, `{"x":1}`), "garbage", body(t, 2, "conflict", 1, `{"x":1}`),
		body(t, 3, "a", 2, `not json`), body(t, 4, "a", 3, `{"y":2}`)))
	if err != nil {
		t.Fatal(err)
	}
	if got := failures(resp); got != "m-1,m-2,m-3" {
		t.Fatalf("failures %q", got)
	}
	// Every reported failure is logged with its reason (TESTPLAN 26), and nothing else is.
	logged := logs.setAsideByID(t)
	if len(logged) != 3 {
		t.Errorf("set-aside log lines for %v, want m-1, m-2, m-3", slices.Collect(maps.Keys(logged)))
	}
	for id, check := range map[string]func(string) bool{
		"m-1": func(r string) bool {
			return strings.HasPrefix(r, "undecodable message: ") && len(r) > len("undecodable message: ")
		},
		"m-2": func(r string) bool { return r == "thing conflict exists with type other" },
		"m-3": func(r string) bool { return strings.Contains(r, "payload") }, // "payload must be a JSON object"
	} {
		l := logged[id]
		if l == nil || len(l.reasons) != 1 {
			t.Errorf("%s: set-aside logged %+v, want once", id, l)
			continue
		}
		if !check(l.reasons[0]) || l.receives[0] != "1" {
			t.Errorf("%s: logged reason %q at receives %s", id, l.reasons[0], l.receives[0])
		}
	}
	if l := logged["m-3"]; l != nil {
		t.Logf("m-3 reason: %s", l.reasons[0])
	}
	if got := sink.State("a"); got != `{"x":1,"y":2}` {
		t.Fatalf("state %s", got)
	}
	// All good: no failures.
	resp, _ = h.HandleSQSEvent(context.Background(), sqsEvent(body(t, 5, "a", 4, `{"x":5}`)))
	if len(resp.BatchItemFailures) != 0 {
		t.Fatalf("failures %v", resp)
	}
}

// TestHandlerDeadline: a sink failing until the invocation's deadline makes every message a
// failure, answered before the deadline.
func TestHandlerDeadline(t *testing.T) {
	sink := &processortest.Sink{Fail: func(ctx context.Context, call int) error { return errors.New("service unavailable") }}
	h, err := NewHandler(newProcessor(t, sink), nil)
	if err != nil {
		t.Fatal(err)
	}
	h.Margin = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	resp, err := h.HandleSQSEvent(ctx, sqsEvent(body(t, 1, "a", 1, `{"x":1}`), "garbage", body(t, 2, "b", 1, `{"x":1}`)))
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("answered after the deadline")
	}
	if got := failures(resp); got != "m-1,m-0,m-2" {
		t.Fatalf("failures %q", got)
	}
}

func TestDecodeBody(t *testing.T) {
	r := processortest.Rec("gw-9", "t", "i", t0, `{"a":1}`)
	r.Seq = 42
	b, _ := envelope.Encode(r)
	in, err := decodeBody(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := in.Record; got.Seq != 42 || got.GW != "gw-9" || string(got.Payload) != `{"a":1}` || in.Err != nil || in.Raw != nil {
		t.Fatalf("%+v", in)
	}
	if _, err := decodeBody(`{"v":9}`); !errors.Is(err, envelope.ErrVersion) {
		t.Fatalf("unknown version: %v", err)
	}
}
