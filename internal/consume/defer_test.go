package consume

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processortest"
)

// deferSink is the test sink, except that it defers the records of thing "throttled" by 7s, as
// the AWS sink does when its control-plane budget is spent or AWS throttles.
type deferSink struct{ processortest.Sink }

func (s *deferSink) Apply(ctx context.Context, b *processor.Batch) ([]processor.Outcome, error) {
	out, err := s.Sink.Apply(ctx, b)
	for i := range out {
		if b.Items[i].Record.ID == "throttled" {
			out[i] = processor.Outcome{Result: processor.Deferred, Reason: "throttled", After: 7 * time.Second}
		}
	}
	return out, err
}

// TestHandlerReportsOnlyDeferred: a batch in which one thing is throttled reports that thing's
// message alone, at once; the others are applied (not reported, so the mapping deletes them).
func TestHandlerReportsOnlyDeferred(t *testing.T) {
	sink := &deferSink{}
	h, err := NewHandler(newProcessor(t, sink), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	began := time.Now()
	resp, err := h.HandleSQSEvent(ctx, sqsEvent(body(t, 1, "a", 1, `{"x":1}`), body(t, 2, "throttled", 1, `{"x":1}`), body(t, 3, "b", 1, `{"y":2}`)))
	if err != nil {
		t.Fatal(err)
	}
	if got := failures(resp); got != "m-1" {
		t.Fatalf("failures %q, want m-1 (the throttled thing's) alone", got)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Fatalf("answered after %v: held to the deadline", took)
	}
	if sink.State("a") != `{"x":1}` || sink.State("b") != `{"y":2}` {
		t.Fatalf("states %s %s", sink.State("a"), sink.State("b"))
	}
}

// TestWorkerDeferred: the worker deletes what was applied and gives a deferred message the
// visibility the sink asked for (7s: 8–10s in whole seconds, spread), without the backoff of a
// failed batch and without touching the others.
func TestWorkerDeferred(t *testing.T) {
	q := newFakeSQS(5)
	q.send(body(t, 1, "a", 1, `{"x":1}`))
	q.send(body(t, 2, "throttled", 1, `{"x":1}`))
	q.send(body(t, 3, "b", 1, `{"y":2}`))
	reg := prometheus.NewRegistry()
	w, err := newWorker(testConfig(), q, newProcessor(t, &deferSink{}), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)
	waitFor(t, 10*time.Second, "one message left", func() bool {
		n, _ := q.sizes()
		return n == 1 && q.count("ChangeMessageVisibilityBatch") == 1
	})
	stop()
	q.mu.Lock()
	vis := append([]int32(nil), q.visChanges...)
	left := q.msgs[0].body
	q.mu.Unlock()
	if len(vis) != 1 || vis[0] < 8 || vis[0] > 10 {
		t.Fatalf("visibility changes %v, want one of 8–10s", vis)
	}
	if left != body(t, 2, "throttled", 1, `{"x":1}`) {
		t.Fatalf("left in the queue: %s", left)
	}
	if got := testutil.ToFloat64(w.m.messages.WithLabelValues("deferred")); got != 1 {
		t.Fatalf("deferred %v", got)
	}
	if got := testutil.ToFloat64(w.m.messages.WithLabelValues("deleted")); got != 2 {
		t.Fatalf("deleted %v", got)
	}
}
