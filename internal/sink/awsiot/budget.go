package awsiot

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/coapgw/coapgw/internal/processor"
)

// The control-plane budget. AWS IoT limits CreateThing to 100 calls/s and CreateThingType to 15/s
// per account and region, whoever calls. Consumers share that without talking to each other:
// each paces its own calls with a token bucket at rate/Consumers (Config.Consumers: the Lambda
// mapping's maximum concurrency, or the number of `coapgw process` workers), so that all of them
// together stay under the account's rate. A thing whose creation would wait longer than
// Config.BudgetWait (or past the batch's deadline) is not tried: its records are deferred
// (processor.Deferred) with the wait as their delay and go back to the queue at once, while the
// rest of the batch is applied. Throttling that AWS answers all the same (another client of the
// account, a burst) is deferred the same way once the SDK's retries are spent.

// bucket is a token bucket: rate tokens a second, at most burst saved. Reservations may take it
// below zero; the wait is then how long the debt takes to repay. A refused reservation is given
// the next free slot after the ones refused before it (next), so that the records deferred
// together come back spread at the rate rather than all at once.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
	next   time.Time // the slot the next refused reservation is told to come back at
}

func newBucket(rate float64) *bucket {
	burst := max(1, rate)
	return &bucket{rate: rate, burst: burst, tokens: burst}
}

// reserve takes a token at now if it is available within maxWait and returns how long to wait
// for it; ok is false (and nothing taken) if it is not, and the wait is then when to come back.
func (b *bucket) reserve(now time.Time, maxWait time.Duration) (wait time.Duration, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		wait = time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
	}
	if wait > maxWait {
		slot := now.Add(wait)
		if b.next.After(slot) {
			slot = b.next
		}
		b.next = slot.Add(time.Duration(float64(time.Second) / b.rate))
		return slot.Sub(now), false
	}
	b.tokens--
	return wait, true
}

// deferredError says a thing's records cannot be applied now: try again after after.
type deferredError struct {
	after  time.Duration
	reason string
	label  string // the deferred metric's reason label: budget or throttled
}

func (e *deferredError) Error() string { return e.reason }

// pace waits for a token of b for the call named what, or returns a *deferredError if that would
// take longer than BudgetWait or leave less than a second before ctx's deadline.
func (s *Sink) pace(ctx context.Context, b *bucket, what string) error {
	maxWait := s.cfg.BudgetWait
	if dl, ok := ctx.Deadline(); ok {
		maxWait = min(maxWait, max(0, time.Until(dl)-time.Second))
	}
	wait, ok := b.reserve(time.Now(), maxWait)
	if !ok {
		return &deferredError{after: wait, label: "budget",
			reason: fmt.Sprintf("%s deferred: this consumer's share of the control-plane rate is spent for the next %v", what, wait.Round(time.Millisecond))}
	}
	if wait <= 0 {
		return nil
	}
	return sleep(ctx, wait)
}

// throttleCodes are the error codes AWS answers a call over its rate with.
var throttleCodes = map[string]bool{
	"ThrottlingException":           true,
	"Throttling":                    true,
	"TooManyRequestsException":      true,
	"RequestLimitExceeded":          true,
	"ProvisionedThroughputExceeded": true,
}

// deferral returns the *deferredError err is or stands for (throttling the SDK's retries did not
// overcome), or nil.
func deferral(err error) *deferredError {
	var de *deferredError
	if errors.As(err, &de) {
		return de
	}
	var api smithy.APIError
	var re *awshttp.ResponseError
	if errors.As(err, &api) && throttleCodes[api.ErrorCode()] || errors.As(err, &re) && re.HTTPStatusCode() == http.StatusTooManyRequests {
		// AWS throttled after the SDK's own retries: come back after a few seconds, spread.
		return &deferredError{after: 2*time.Second + rand.N(3*time.Second), label: "throttled", reason: "throttled by AWS: " + err.Error()}
	}
	return nil
}

// deferThing marks the records of thing's updates ups (indexes into b.Updates) that have no
// outcome yet as deferred by de.
func (s *Sink) deferThing(b *processor.Batch, ups []int, out []processor.Outcome, de *deferredError) {
	n := 0
	for _, ui := range ups {
		for _, i := range b.Updates[ui].Items {
			if out[i].Result == 0 {
				out[i] = processor.Outcome{Result: processor.Deferred, Reason: de.reason, After: de.after}
				n++
			}
		}
	}
	s.m.deferred.WithLabelValues(de.label).Add(float64(n))
}
