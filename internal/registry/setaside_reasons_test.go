package registry

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSetAsideReasons: records are grouped by reason, most frequent first; dismissing a reason
// deletes its records only, and the totals and the gauge follow, after a reopen too.
func TestSetAsideReasons(t *testing.T) {
	e := newEnv(t, Options{})
	e.send(rec("sensor", "a", 1, `{"v":1}`))
	e.apply(e.batch(rec("sensor", "a", 1, `[1]`), rec("sensor", "b", 2, `[2]`), rec("sensor", "c", 3, `[3]`),
		rec("meter", "a", 4, `{"v":2}`))) // three non-objects and a type conflict
	got, err := e.r.SetAsideReasons(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Count != 3 || got[1].Count != 1 || got[0].Reason == got[1].Reason || got[0].Last.IsZero() {
		t.Fatalf("reasons %+v, want 3 of one and 1 of another", got)
	}
	n, err := e.r.DismissSetAsides(t.Context(), got[0].Reason)
	if err != nil || n != 3 {
		t.Fatalf("dismiss: %d, %v; want 3", n, err)
	}
	if n, err := e.r.DismissSetAsides(t.Context(), "no such reason"); err != nil || n != 0 {
		t.Errorf("dismiss of an unknown reason: %d, %v", n, err)
	}
	if g := testutil.ToFloat64(e.r.w.m.setAsideHeld); g != 1 {
		t.Errorf("coapgw_registry_set_aside_records %v, want 1", g)
	}
	e.reopen()
	page, total := e.setAsidesTotal() // fails when the totals disagree with the table
	if total != 1 || len(page.Records) != 1 || page.Records[0].Reason != got[1].Reason {
		t.Errorf("after dismissing: %d held, %+v", total, page.Records)
	}
	if c, _ := e.r.Counts(t.Context()); c.SetAside != 1 {
		t.Errorf("counts %+v", c)
	}
}
