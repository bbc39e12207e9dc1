package consume

// End-to-end tests of SQS → Worker (or the Lambda handler) → processor → AWS IoT sink against
// moto (SQS, IoT, IoT data plane), with the real SDK over HTTP on loopback. They fail, not skip,
// when COAPGW_REQUIRE_PEERS is set and moto is unavailable (internal/awstest).

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgw/coapgw/internal/awstest"
	"github.com/coapgw/coapgw/internal/envelope"
	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/sink/awsiot"
)

var controlPlane = []string{"CreateThingType", "CreateThing", "DescribeThing", "DescribeEndpoint"}

// motoEnv is moto with a queue whose redrive policy sends messages to a DLQ after two receives.
type motoEnv struct {
	moto       *awstest.Moto
	cfg        aws.Config // counted
	calls      *awstest.Calls
	sqs        *awssqs.Client // not counted
	iot        *iot.Client    // not counted
	reader     *awsiot.Sink   // not counted: reads shadows
	queue, dlq string
	log        *slog.Logger // the workers' logger (nil: discard)
}

func newMotoEnv(t *testing.T) *motoEnv {
	t.Helper()
	m := awstest.Start(t)
	ctx := t.Context()
	e := &motoEnv{moto: m, sqs: awssqs.NewFromConfig(m.AWSConfig(ctx)), iot: iot.NewFromConfig(m.AWSConfig(ctx))}
	e.dlq = m.CreateQueue(ctx, "coapgw-dlq", nil)
	attrs, err := e.sqs.GetQueueAttributes(ctx, &awssqs.GetQueueAttributesInput{QueueUrl: &e.dlq, AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn}})
	if err != nil {
		t.Fatal(err)
	}
	redrive := fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":"2"}`, attrs.Attributes["QueueArn"])
	e.queue = m.CreateQueue(ctx, "coapgw", map[string]string{"RedrivePolicy": redrive})
	e.cfg = m.AWSConfig(ctx)
	e.calls = awstest.CountCalls(&e.cfg)
	if e.reader, err = awsiot.New(awsiot.Config{}, m.AWSConfig(ctx), nil, nil); err != nil {
		t.Fatal(err)
	}
	return e
}

// send puts records on the queue, ten per SendMessageBatch.
func (e *motoEnv) send(t *testing.T, recs ...record.Record) {
	t.Helper()
	bodies := make([]string, len(recs))
	for i := range recs {
		b, err := envelope.Encode(recs[i])
		if err != nil {
			t.Fatal(err)
		}
		bodies[i] = b
	}
	e.sendBodies(t, bodies...)
}

func (e *motoEnv) sendBodies(t *testing.T, bodies ...string) {
	t.Helper()
	for start := 0; start < len(bodies); start += 10 {
		var entries []types.SendMessageBatchRequestEntry
		for i, b := range bodies[start:min(start+10, len(bodies))] {
			entries = append(entries, types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: aws.String(b)})
		}
		out, err := e.sqs.SendMessageBatch(t.Context(), &awssqs.SendMessageBatchInput{QueueUrl: &e.queue, Entries: entries})
		if err != nil || len(out.Failed) > 0 {
			t.Fatalf("send: %v %+v", err, out)
		}
	}
}

// depth is the number of messages in a queue, visible or in flight.
func (e *motoEnv) depth(t *testing.T, url string) int {
	t.Helper()
	out, err := e.sqs.GetQueueAttributes(t.Context(), &awssqs.GetQueueAttributesInput{QueueUrl: &url,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages, types.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)])
	nv, _ := strconv.Atoi(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
	return n + nv
}

func (e *motoEnv) shadow(t *testing.T, thing string) (string, int64) {
	t.Helper()
	s, v, err := e.reader.Shadow(t.Context(), thing)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func (e *motoEnv) thingType(t *testing.T, thing string) string {
	t.Helper()
	out, err := e.iot.DescribeThing(t.Context(), &iot.DescribeThingInput{ThingName: &thing})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.ThingTypeName)
}

// pipeline is one `coapgw process`: sink, processor, worker, running until stopped.
type pipeline struct {
	proc *processor.Processor
	stop func()

	mu      sync.Mutex
	touched int // Σ over applied batches of the things with a record applied
}

func (e *motoEnv) start(t *testing.T, scfg awsiot.Config) *pipeline {
	t.Helper()
	p := &pipeline{}
	sink, err := awsiot.New(scfg, e.cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.proc, err = processor.New(processor.Config{
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
		OnApplied: func(things []string) {
			p.mu.Lock()
			p.touched += len(things)
			p.mu.Unlock()
		},
	}, sink, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{QueueURL: e.queue, WaitTime: time.Second, BatchWait: 100 * time.Millisecond, VisibilityTimeout: 30 * time.Second},
		e.cfg, p.proc, e.log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p.stop = start(t, w)
	return p
}

func (p *pipeline) touchedThings() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.touched
}

// done waits until the processor has decided n records and the queue is empty.
func (e *motoEnv) done(t *testing.T, p *pipeline, n int64) {
	t.Helper()
	waitFor(t, 60*time.Second, fmt.Sprintf("%d records processed", n), func() bool {
		st := p.proc.Stats()
		return st.Applied+st.Duplicates+st.SetAside >= n
	})
	waitFor(t, 60*time.Second, "an empty queue", func() bool { return e.depth(t, e.queue) == 0 })
}

func motoRec(gw, typ, thing string, seq uint64, sec int, payload string) record.Record {
	r := processortest.Rec(gw, typ, thing, t0.Add(time.Duration(sec)*time.Second), payload)
	r.Seq = seq
	return r
}

// TestMotoWorker: records sent to SQS end up as thing types, things and shadows; control-plane
// calls happen once per new type and thing and never for things already seen (also by a second
// worker with an empty cache); UpdateThingShadow is at most one per thing per batch.
func TestMotoWorker(t *testing.T) {
	e := newMotoEnv(t)
	var recs []record.Record
	for i := range 60 {
		typ := "sensor"
		if i%6 >= 4 {
			typ = "meter"
		}
		recs = append(recs, motoRec("gw-a", typ, fmt.Sprintf("dev-%d", i%6), uint64(i+1), i, fmt.Sprintf(`{"n":%d,"env":{"t%d":%d}}`, i, i%2, i)))
	}
	e.send(t, recs...)
	p := e.start(t, awsiot.Config{})
	e.done(t, p, 60)
	p.stop()

	if got := e.calls.Total("CreateThingType"); got != 2 {
		t.Errorf("CreateThingType %d, want 2 (new types)", got)
	}
	if got := e.calls.Total("CreateThing"); got != 6 {
		t.Errorf("CreateThing %d, want 6 (new things)", got)
	}
	if got := e.calls.Total("DescribeThing", "DescribeEndpoint"); got != 0 {
		t.Errorf("DescribeThing/Endpoint %d, want 0", got)
	}
	// Each write is two updates: the shadow and coapgw's times in its named shadow.
	if u, touched := e.calls.Total("UpdateThingShadow"), p.touchedThings(); u > 2*touched || u < 12 {
		t.Errorf("UpdateThingShadow %d for %d (thing, batch) pairs", u, touched)
	}
	for i := range 6 {
		thing := fmt.Sprintf("dev-%d", i)
		wantType := "sensor"
		if i >= 4 {
			wantType = "meter"
		}
		if got := e.thingType(t, thing); got != wantType {
			t.Errorf("%s type %q, want %q", thing, got, wantType)
		}
		last0, last1 := 54+i, 54+i // the newest records of thing i: n and env.t(i%2)
		if last0 > 59 {
			last0 -= 6
		}
		got, _ := e.shadow(t, thing)
		want := fmt.Sprintf(`{"env":{"t%d":%d},"n":%d}`, i%2, last1, last0)
		if got != want {
			t.Errorf("%s shadow %s, want %s", thing, got, want)
		}
	}

	// A second worker with an empty cache: no control-plane call for things already seen.
	cp, gets := e.calls.Total(controlPlane...), e.calls.Total("GetThingShadow")
	var more []record.Record
	for i := range 30 {
		typ := "sensor"
		if i%6 >= 4 {
			typ = "meter"
		}
		more = append(more, motoRec("gw-a", typ, fmt.Sprintf("dev-%d", i%6), uint64(100+i), 100+i, fmt.Sprintf(`{"n":%d}`, 100+i)))
	}
	updates := e.calls.Total("UpdateThingShadow")
	e.send(t, more...)
	p2 := e.start(t, awsiot.Config{})
	e.done(t, p2, 30)
	p2.stop()
	if got := e.calls.Total(controlPlane...) - cp; got != 0 {
		t.Errorf("control-plane calls for things already seen: %d (%v)", got, e.calls)
	}
	if got := e.calls.Total("GetThingShadow") - gets; got != 12 {
		t.Errorf("GetThingShadow %d, want 12 (the shadow and the named shadow per thing, cold cache)", got)
	}
	if u := e.calls.Total("UpdateThingShadow") - updates; u > 2*p2.touchedThings() {
		t.Errorf("UpdateThingShadow %d for %d (thing, batch) pairs", u, p2.touchedThings())
	}
	if got, _ := e.shadow(t, "dev-5"); !strings.Contains(got, `"n":129`) {
		t.Errorf("dev-5 shadow %s", got)
	}
}

// TestMotoPoisonToDLQ: an invalid payload, an undecodable message and a thing/type conflict end
// in the DLQ through the redrive policy (maxReceiveCount 2); the records around them are applied
// and nothing waits for them.
func TestMotoPoisonToDLQ(t *testing.T) {
	e := newMotoEnv(t)
	var logs *logBuf
	e.log, logs = newTestLogger()
	p := e.start(t, awsiot.Config{})
	e.send(t, motoRec("gw-b", "other", "clash", 1, 1, `{"a":1}`))
	e.done(t, p, 1)

	e.send(t,
		motoRec("gw-b", "sensor", "ok-1", 2, 2, `{"a":1}`),
		motoRec("gw-b", "sensor", "ok-1", 3, 3, `not json`),
		motoRec("gw-b", "sensor", "clash", 4, 4, `{"a":2}`),
		motoRec("gw-b", "sensor", "ok-2", 5, 5, `{"a":1}`),
	)
	e.sendBodies(t, `{"v":1,"gw":"gw-b","seq":"6"}`)
	e.send(t, motoRec("gw-b", "sensor", "ok-1", 7, 7, `{"b":1}`))
	waitFor(t, 60*time.Second, "3 messages in the DLQ", func() bool { return e.depth(t, e.dlq) == 3 })
	waitFor(t, 60*time.Second, "an empty queue", func() bool { return e.depth(t, e.queue) == 0 })
	if got, _ := e.shadow(t, "ok-1"); got != `{"a":1,"b":1}` {
		t.Errorf("ok-1 %s", got)
	}
	if got, _ := e.shadow(t, "clash"); got != `{"a":1}` {
		t.Errorf("clash %s", got)
	}
	if got := e.thingType(t, "clash"); got != "other" {
		t.Errorf("clash type %s", got)
	}
	out, err := e.sqs.ReceiveMessage(t.Context(), &awssqs.ReceiveMessageInput{QueueUrl: &e.dlq, MaxNumberOfMessages: 10})
	if err != nil {
		t.Fatal(err)
	}
	var seqs []string
	logged := logs.setAsideByID(t)
	for _, m := range out.Messages {
		var env struct{ Seq string }
		json.Unmarshal([]byte(aws.ToString(m.Body)), &env)
		seqs = append(seqs, env.Seq)
		// The operator can tell why each message went to the DLQ: the worker logged its reason
		// on each of its two receives, by message id (TESTPLAN 26).
		want := map[string]string{"3": "payload", "4": "thing clash exists with type other", "6": "undecodable message: envelope: "}[env.Seq]
		l := logged[aws.ToString(m.MessageId)]
		if l == nil || strings.Join(l.receives, ",") != "1,2" {
			t.Errorf("seq %s (%s): set-aside logged %+v, want at receives 1,2", env.Seq, aws.ToString(m.MessageId), l)
			continue
		}
		for _, r := range l.reasons {
			if !strings.Contains(r, want) {
				t.Errorf("seq %s: logged reason %q, want it to say %q", env.Seq, r, want)
			}
		}
	}
	slices.Sort(seqs)
	if strings.Join(seqs, ",") != "3,4,6" {
		t.Errorf("DLQ holds seqs %v, want 3,4,6", seqs)
	}
	if len(logged) != 3 {
		t.Errorf("set-aside logged for %d messages, want 3", len(logged))
	}
}

// TestMotoRedeliveryAndOrder: records older than the shadow and records delivered twice do not
// make the shadow go backwards and cost no update; an older record still sets a property the
// newer ones never had.
func TestMotoRedeliveryAndOrder(t *testing.T) {
	e := newMotoEnv(t)
	newer := []record.Record{
		motoRec("gw-c", "sensor", "a", 1, 100, `{"temp":21,"hum":40}`),
		motoRec("gw-c", "sensor", "b", 2, 100, `{"temp":22}`),
		motoRec("gw-c", "sensor", "c", 3, 100, `{"temp":23}`),
	}
	e.send(t, newer...)
	p := e.start(t, awsiot.Config{})
	e.done(t, p, 3)
	_, va := e.shadow(t, "a")
	_, vb := e.shadow(t, "b")
	updates := e.calls.Total("UpdateThingShadow")

	e.send(t, newer[0], newer[0]) // a: the same record twice more
	e.send(t,
		motoRec("gw-c", "sensor", "b", 10, 50, `{"temp":5}`),            // b: older, same property
		motoRec("gw-c", "sensor", "c", 11, 50, `{"temp":6,"batt":3.3}`), // c: older, one new property
	)
	e.done(t, p, 7)
	if got := e.calls.Total("UpdateThingShadow") - updates; got != 2 {
		t.Errorf("UpdateThingShadow %d after redelivered and older records, want 2 (c's new property: the shadow and its times)", got)
	}
	if got, v := e.shadow(t, "a"); got != `{"hum":40,"temp":21}` || v != va {
		t.Errorf("a %s v%d (was v%d)", got, v, va)
	}
	if got, v := e.shadow(t, "b"); got != `{"temp":22}` || v != vb {
		t.Errorf("b %s v%d (was v%d)", got, v, vb)
	}
	if got, _ := e.shadow(t, "c"); got != `{"batt":3.3,"temp":23}` {
		t.Errorf("c %s", got)
	}
	p.stop()

	// The same with a cold cache: the shadow's stamps decide.
	e.send(t, motoRec("gw-c", "sensor", "b", 12, 60, `{"temp":7}`), newer[2])
	p2 := e.start(t, awsiot.Config{})
	e.done(t, p2, 2)
	if got, v := e.shadow(t, "b"); got != `{"temp":22}` || v != vb {
		t.Errorf("cold: b %s v%d", got, v)
	}
	if got, _ := e.shadow(t, "c"); got != `{"batt":3.3,"temp":23}` {
		t.Errorf("cold: c %s", got)
	}
}

// TestMotoLambda: the Lambda handler invoked in-process with SQS events built from messages
// received from the moto queue; the test deletes what the handler did not report, as the event
// source mapping does. The poison record keeps coming back until the DLQ takes it.
func TestMotoLambda(t *testing.T) {
	e := newMotoEnv(t)
	var recs []record.Record
	for i := range 25 {
		recs = append(recs, motoRec("gw-l", "tracker", fmt.Sprintf("trk-%d", i%5), uint64(i+1), i, fmt.Sprintf(`{"pos":{"lat":%d,"lon":%d}}`, i, -i)))
	}
	recs = append(recs, motoRec("gw-l", "tracker", "trk-0", 99, 99, `{"deep":{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}}}`))
	e.send(t, recs...)
	sink, err := awsiot.New(awsiot.Config{}, e.cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	proc, err := processor.New(processor.Config{}, sink, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	log, logs := newTestLogger()
	h, err := NewHandler(proc, log)
	if err != nil {
		t.Fatal(err)
	}
	invocations, failed := 0, 0
	waitFor(t, 60*time.Second, "an empty queue", func() bool {
		out, err := e.sqs.ReceiveMessage(t.Context(), &awssqs.ReceiveMessageInput{QueueUrl: &e.queue, MaxNumberOfMessages: 10,
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll}, VisibilityTimeout: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Messages) > 0 {
			var ev events.SQSEvent
			for _, m := range out.Messages {
				ev.Records = append(ev.Records, events.SQSMessage{MessageId: aws.ToString(m.MessageId), ReceiptHandle: aws.ToString(m.ReceiptHandle),
					Body: aws.ToString(m.Body), Attributes: m.Attributes, EventSource: "aws:sqs"})
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			resp, err := h.HandleSQSEvent(ctx, ev)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			invocations++
			failed += len(resp.BatchItemFailures)
			bad := map[string]bool{}
			for _, f := range resp.BatchItemFailures {
				bad[f.ItemIdentifier] = true
			}
			var del []types.DeleteMessageBatchRequestEntry
			for i, m := range out.Messages {
				if !bad[aws.ToString(m.MessageId)] {
					del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle})
				}
			}
			if len(del) > 0 {
				if _, err := e.sqs.DeleteMessageBatch(t.Context(), &awssqs.DeleteMessageBatchInput{QueueUrl: &e.queue, Entries: del}); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Visible depth alone is not enough: the poison record is invisible for a second after
		// each failure. Done when the queue is empty and the DLQ has taken it.
		return e.depth(t, e.queue) == 0 && e.depth(t, e.dlq) == 1
	})
	if failed != 2 || e.depth(t, e.dlq) != 1 {
		t.Errorf("failures reported %d (want 2: the deep record, twice), DLQ %d", failed, e.depth(t, e.dlq))
	}
	// Each failure was logged with the message id, its receive count and why (TESTPLAN 26).
	logged := logs.setAsideByID(t)
	if len(logged) != 1 {
		t.Errorf("set-aside logged for %d messages, want 1 (the deep record)", len(logged))
	}
	for id, l := range logged {
		if strings.Join(l.receives, ",") != "1,2" {
			t.Errorf("%s: set-aside logged at receives %v, want 1,2", id, l.receives)
		}
		for _, r := range l.reasons {
			if !strings.Contains(r, "nested") {
				t.Errorf("%s: logged reason %q, want the nesting limit", id, r)
			}
		}
		t.Logf("%s set aside: %s", id, l.reasons[0])
	}
	for i := range 5 {
		got, _ := e.shadow(t, fmt.Sprintf("trk-%d", i))
		if want := fmt.Sprintf(`{"pos":{"lat":%d,"lon":%d}}`, 20+i, -(20 + i)); got != want {
			t.Errorf("trk-%d %s, want %s", i, got, want)
		}
		if typ := e.thingType(t, fmt.Sprintf("trk-%d", i)); typ != "tracker" {
			t.Errorf("type %s", typ)
		}
	}
	if got := e.calls.Total("CreateThing"); got != 5 {
		t.Errorf("CreateThing %d, want 5", got)
	}
	t.Logf("%d invocations, calls %v", invocations, e.calls)
}
