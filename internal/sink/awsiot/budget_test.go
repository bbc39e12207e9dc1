package awsiot

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/record"
)

// TestControlPlaneBudget: a consumer paces CreateThing to its share of the account's rate
// (CreateThingRate/Consumers) and defers, without an error and without calling AWS, the things
// it cannot create within BudgetWait; the rest of the batch is applied. A deferred record says
// how long to wait, the deferred things spread at the consumer's rate.
func TestControlPlaneBudget(t *testing.T) {
	f := newFakeAWS()
	// 10/s shared by 2 consumers: 5/s each, a burst of 5; 400ms of waiting: 2 more.
	s := newTestSink(t, f, Config{CreateThingRate: 10, Consumers: 2, BudgetWait: 400 * time.Millisecond, Concurrency: 4})
	var recs []record.Record
	for i := range 20 {
		recs = append(recs, rec(fmt.Sprintf("dev-%d", i), 1, `{"a":1}`))
	}
	b := processortest.Batch(t, recs...)
	began := time.Now()
	out, err := s.Apply(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(began)
	applied, deferred := 0, 0
	var longest time.Duration
	for _, o := range out {
		switch o.Result {
		case processor.Applied:
			applied++
		case processor.Deferred:
			deferred++
			longest = max(longest, o.After)
			if o.After <= 400*time.Millisecond || o.After > 4*time.Second {
				t.Errorf("deferred by %v: want beyond the budget wait, within what 20 things at 5/s take", o.After)
			}
		default:
			t.Errorf("outcome %+v", o)
		}
	}
	t.Logf("applied %d, deferred %d (longest %v) in %v", applied, deferred, longest, took)
	if longest < 2*time.Second {
		t.Errorf("longest deferral %v: the deferred things should come back spread at 5/s", longest)
	}
	if applied < 5 || applied > 8 || applied+deferred != 20 {
		t.Fatalf("applied %d deferred %d: want 5–8 created (burst 5 + 400ms at 5/s), the rest deferred", applied, deferred)
	}
	if got := f.count("CreateThing"); got != applied {
		t.Fatalf("CreateThing %d for %d things applied: a deferred thing must cost no call", got, applied)
	}
	if took > 2*time.Second {
		t.Fatalf("Apply took %v: held the batch", took)
	}
}
