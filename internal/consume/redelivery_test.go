package consume

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/sink/awsiot"
)

// lostDeleteSQS is the worker's SQS client with one crash simulated: the first
// DeleteMessageBatch is answered with success but never sent, as if the worker died after
// applying the records and before deleting their messages. It also leaves the visibility timeout
// out of every receive, so the queue's own (short) one applies and SQS hands the undeleted
// messages out again soon. It records what SQS delivered.
type lostDeleteSQS struct {
	*awssqs.Client

	mu       sync.Mutex
	ids      map[string]string // receipt handle → message id
	receives map[string]int    // message id → highest ApproximateReceiveCount seen
	received int               // messages received, redeliveries included
	lost     []string          // ids of the messages whose delete was dropped
}

func (s *lostDeleteSQS) ReceiveMessage(ctx context.Context, in *awssqs.ReceiveMessageInput, optFns ...func(*awssqs.Options)) (*awssqs.ReceiveMessageOutput, error) {
	cp := *in
	cp.VisibilityTimeout = 0 // omitted: the queue's VisibilityTimeout applies
	out, err := s.Client.ReceiveMessage(ctx, &cp, optFns...)
	if err != nil {
		return out, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range out.Messages {
		id := aws.ToString(m.MessageId)
		s.ids[aws.ToString(m.ReceiptHandle)] = id
		n, _ := strconv.Atoi(m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
		s.receives[id] = max(s.receives[id], n)
		s.received++
	}
	return out, nil
}

func (s *lostDeleteSQS) DeleteMessageBatch(ctx context.Context, in *awssqs.DeleteMessageBatchInput, optFns ...func(*awssqs.Options)) (*awssqs.DeleteMessageBatchOutput, error) {
	s.mu.Lock()
	if s.lost == nil {
		out := &awssqs.DeleteMessageBatchOutput{}
		s.lost = []string{}
		for _, e := range in.Entries {
			s.lost = append(s.lost, s.ids[aws.ToString(e.ReceiptHandle)])
			out.Successful = append(out.Successful, types.DeleteMessageBatchResultEntry{Id: e.Id})
		}
		s.mu.Unlock()
		return out, nil
	}
	s.mu.Unlock()
	return s.Client.DeleteMessageBatch(ctx, in, optFns...)
}

// redelivered reports whether a delete was dropped and SQS has handed every one of its messages
// out again.
func (s *lostDeleteSQS) redelivered() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.lost) == 0 {
		return false
	}
	for _, id := range s.lost {
		if s.receives[id] < 2 {
			return false
		}
	}
	return true
}

// TestMotoRedeliveryAfterLostDelete (TESTPLAN 25, crash before delete and visibility timeout
// expiry with a real queue): the worker applies a batch, its DeleteMessageBatch is lost, and moto
// itself redelivers those messages when the queue's 2 s visibility timeout ends. Every record is
// applied exactly once: the redelivered ones are counted as duplicates (exactly as many as the
// extra receives), cost no shadow update and leave every shadow's state and version as they
// were; the queue ends empty.
func TestMotoRedeliveryAfterLostDelete(t *testing.T) {
	e := newMotoEnv(t)
	e.queue = e.moto.CreateQueue(t.Context(), "coapgw-redeliver", map[string]string{"VisibilityTimeout": "2"})
	const things = 10
	var recs []record.Record
	for i := range things { // two records per thing, on distinct properties: each changes the state
		recs = append(recs,
			motoRec("gw-r", "sensor", fmt.Sprintf("rd-%d", i), uint64(2*i+1), i, fmt.Sprintf(`{"a":%d}`, i)),
			motoRec("gw-r", "sensor", fmt.Sprintf("rd-%d", i), uint64(2*i+2), i, fmt.Sprintf(`{"b":%d}`, i)))
	}
	n := int64(len(recs))
	e.send(t, recs...)

	api := &lostDeleteSQS{Client: awssqs.NewFromConfig(e.cfg), ids: map[string]string{}, receives: map[string]int{}}
	sink, err := awsiot.New(awsiot.Config{}, e.cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		touched int
	)
	proc, err := processor.New(processor.Config{
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
		OnApplied: func(th []string) { mu.Lock(); touched += len(th); mu.Unlock() },
	}, sink, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The worker's own VisibilityTimeout (its batch deadline) stays long; the queue's 2 s applies
	// to the messages (see lostDeleteSQS).
	w, err := newWorker(Config{QueueURL: e.queue, WaitTime: time.Second, BatchWait: 100 * time.Millisecond, VisibilityTimeout: 30 * time.Second},
		api, proc, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	stop := start(t, w)

	// Every record applied once: every shadow holds both of its records. (Not Stats().Applied: see
	// retriedUpdates below.)
	waitFor(t, 60*time.Second, "every record applied once", func() bool {
		for i := range things {
			if s, _, err := e.reader.Shadow(t.Context(), fmt.Sprintf("rd-%d", i)); err != nil || s != fmt.Sprintf(`{"a":%d,"b":%d}`, i, i) {
				return false
			}
		}
		return true
	})
	updates := e.calls.Total("UpdateThingShadow")
	type shadow struct {
		doc string
		ver int64
	}
	before := map[string]shadow{}
	for i := range things {
		thing := fmt.Sprintf("rd-%d", i)
		doc, ver := e.shadow(t, thing)
		if want := fmt.Sprintf(`{"a":%d,"b":%d}`, i, i); doc != want {
			t.Errorf("%s shadow %s, want %s", thing, doc, want)
		}
		before[thing] = shadow{doc, ver}
	}

	waitFor(t, 60*time.Second, "SQS to redeliver the messages whose delete was lost", api.redelivered)
	waitFor(t, 60*time.Second, "an empty queue", func() bool { return e.depth(t, e.queue) == 0 })
	stop()
	t.Logf("done in %v", time.Since(began).Round(time.Millisecond))

	api.mu.Lock()
	lost, received, distinct := slices.Clone(api.lost), api.received, len(api.receives)
	api.mu.Unlock()
	st := proc.Stats()
	redeliveries := int64(received) - n
	t.Logf("delete lost for %d messages; %d receives of %d messages; stats %+v; calls %v", len(lost), received, distinct, st, e.calls)
	if distinct != int(n) {
		t.Errorf("%d distinct messages received, want %d", distinct, n)
	}
	if got := int(testutil.ToFloat64(w.m.received)); got != received {
		t.Errorf("worker counted %d received, SQS delivered %d", got, received)
	}
	if redeliveries < int64(len(lost)) {
		t.Errorf("%d redeliveries, want at least the %d messages whose delete was lost", redeliveries, len(lost))
	}
	// An UpdateThingShadow that moto applied but whose answer was lost (seen under load) is retried
	// by the SDK, gets 409, and the re-read finds the write: its records count as duplicates,
	// though this worker wrote them. Only such a retry excuses fewer than n applied.
	retriedUpdates := e.calls.Attempts("UpdateThingShadow") - e.calls.Total("UpdateThingShadow")
	if st.Applied > n || st.Applied < n && retriedUpdates == 0 {
		t.Errorf("applied %d, want %d (a redelivered record must not be applied again; %d retried updates)", st.Applied, n, retriedUpdates)
	}
	if st.Applied+st.Duplicates != int64(received) {
		t.Errorf("applied %d + duplicates %d, want one outcome per receive (%d)", st.Applied, st.Duplicates, received)
	}
	if st.SetAside != 0 {
		t.Errorf("set aside %d", st.SetAside)
	}
	if got := e.calls.Total("UpdateThingShadow"); got != updates {
		t.Errorf("UpdateThingShadow %d after the redelivery, was %d", got, updates)
	}
	mu.Lock()
	if updates > 2*touched || updates < 2*things { // the shadow and the named shadow's times
		t.Errorf("UpdateThingShadow %d for %d (thing, batch) pairs and %d things", updates, touched, things)
	}
	mu.Unlock()
	for thing, b := range before {
		if doc, ver := e.shadow(t, thing); doc != b.doc || ver != b.ver {
			t.Errorf("%s shadow %s v%d after the redelivery, was %s v%d", thing, doc, ver, b.doc, b.ver)
		}
	}
	if got := testutil.ToFloat64(w.m.inflight); got != 0 {
		t.Errorf("inflight %v", got)
	}
}
