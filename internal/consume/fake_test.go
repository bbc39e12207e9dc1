package consume

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSQS is an in-memory standard queue with visibility timeouts, receive counts and a redrive
// policy (maxReceive; 0 = none) moving messages to dlq the way SQS does: on a receive after
// maxReceive receives.
type fakeSQS struct {
	mu          sync.Mutex
	msgs        []*fakeMsg
	dlq         []*fakeMsg
	maxReceive  int
	next        int
	calls       map[string]int
	visChanges  []int32 // every visibility asked for in ChangeMessageVisibilityBatch
	maxReceives int     // the most receives of one message

	failDelete error // DeleteMessageBatch fails while set
}

type fakeMsg struct {
	id, body, receipt string
	receives          int
	visibleAt         time.Time
}

func newFakeSQS(maxReceive int) *fakeSQS {
	return &fakeSQS{maxReceive: maxReceive, calls: map[string]int{}}
}

func (q *fakeSQS) send(body string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.next++
	q.msgs = append(q.msgs, &fakeMsg{id: "m-" + strconv.Itoa(q.next), body: body})
}

func (q *fakeSQS) count(op string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.calls[op]
}

// sizes returns the messages in the queue and in the DLQ.
func (q *fakeSQS) sizes() (int, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.msgs), len(q.dlq)
}

func (q *fakeSQS) ReceiveMessage(ctx context.Context, in *awssqs.ReceiveMessageInput, _ ...func(*awssqs.Options)) (*awssqs.ReceiveMessageOutput, error) {
	deadline := time.Now().Add(time.Duration(in.WaitTimeSeconds) * time.Second)
	for {
		q.mu.Lock()
		q.calls["ReceiveMessage"]++
		now := time.Now()
		var out []types.Message
		kept := q.msgs[:0]
		for _, m := range q.msgs {
			if len(out) < int(in.MaxNumberOfMessages) && !now.Before(m.visibleAt) {
				if q.maxReceive > 0 && m.receives >= q.maxReceive {
					q.dlq = append(q.dlq, m)
					continue
				}
				m.receives++
				q.maxReceives = max(q.maxReceives, m.receives)
				m.receipt = fmt.Sprintf("%s#%d", m.id, m.receives)
				m.visibleAt = now.Add(time.Duration(in.VisibilityTimeout) * time.Second)
				out = append(out, types.Message{
					MessageId: aws.String(m.id), ReceiptHandle: aws.String(m.receipt), Body: aws.String(m.body),
					Attributes: map[string]string{"ApproximateReceiveCount": strconv.Itoa(m.receives)},
				})
			}
			kept = append(kept, m)
		}
		q.msgs = kept
		q.mu.Unlock()
		if len(out) > 0 || !time.Now().Before(deadline) {
			return &awssqs.ReceiveMessageOutput{Messages: out}, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (q *fakeSQS) find(receipt string) int {
	for i, m := range q.msgs {
		if m.receipt == receipt {
			return i
		}
	}
	return -1
}

func (q *fakeSQS) DeleteMessageBatch(ctx context.Context, in *awssqs.DeleteMessageBatchInput, _ ...func(*awssqs.Options)) (*awssqs.DeleteMessageBatchOutput, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.calls["DeleteMessageBatch"]++
	if q.failDelete != nil {
		return nil, q.failDelete
	}
	if len(in.Entries) > 10 {
		return nil, fmt.Errorf("too many entries")
	}
	out := &awssqs.DeleteMessageBatchOutput{}
	for _, e := range in.Entries {
		if i := q.find(*e.ReceiptHandle); i >= 0 {
			q.msgs = append(q.msgs[:i], q.msgs[i+1:]...)
		}
		out.Successful = append(out.Successful, types.DeleteMessageBatchResultEntry{Id: e.Id})
	}
	return out, nil
}

func (q *fakeSQS) ChangeMessageVisibilityBatch(ctx context.Context, in *awssqs.ChangeMessageVisibilityBatchInput, _ ...func(*awssqs.Options)) (*awssqs.ChangeMessageVisibilityBatchOutput, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.calls["ChangeMessageVisibilityBatch"]++
	if len(in.Entries) > 10 {
		return nil, fmt.Errorf("too many entries")
	}
	out := &awssqs.ChangeMessageVisibilityBatchOutput{}
	for _, e := range in.Entries {
		q.visChanges = append(q.visChanges, e.VisibilityTimeout)
		if i := q.find(*e.ReceiptHandle); i >= 0 {
			q.msgs[i].visibleAt = time.Now().Add(time.Duration(e.VisibilityTimeout) * time.Second)
		}
		out.Successful = append(out.Successful, types.ChangeMessageVisibilityBatchResultEntry{Id: e.Id})
	}
	return out, nil
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var _ sqsAPI = (*fakeSQS)(nil)
