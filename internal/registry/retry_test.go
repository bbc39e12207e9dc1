package registry

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/record"
)

// TestRetrySetAsides: records set aside because their thing existed with another type (coapgw
// bench writing into sensor/dev-1) fail again while it does, and are set aside again with the
// reason; once the thing is deleted, a retry by reason applies each of them exactly once (a
// second retry finds nothing), the counts follow, and the high-water mark does not move.
func TestRetrySetAsides(t *testing.T) {
	e := newEnv(t, Options{})
	e.send(rec("sensor", "dev-1", 1, `{"temp":20}`))
	var recs []record.Record
	for i := range 5 {
		recs = append(recs, rec("bench", "dev-1", float64(10+i), fmt.Sprintf(`{"n":%d}`, i)))
	}
	for _, o := range e.apply(e.batch(recs...)) {
		if o.Result != processor.SetAside {
			t.Fatalf("bench record: %v, want set aside", o.Result)
		}
	}
	const reason = "thing dev-1 exists with type sensor"
	mark, _ := e.r.HighWater("gw1")

	res, err := e.r.RetrySetAsides(t.Context(), RetrySelection{Reason: reason})
	if err != nil || res.Applied != 0 || res.SetAside != 5 || res.Skipped != 0 {
		t.Fatalf("retry while dev-1 is a sensor: %+v, %v", res, err)
	}
	if c, _ := e.r.Counts(t.Context()); c.SetAside != 5 || c.Messages != 1 {
		t.Fatalf("counts after a failed retry: %+v", c)
	}
	if page, _ := e.r.SetAsides(t.Context(), 10, ""); len(page.Records) != 5 || page.Records[0].Reason != reason {
		t.Fatalf("set-aside records after a failed retry: %+v", page)
	}

	if err := e.r.DeleteThing(t.Context(), "dev-1"); err != nil {
		t.Fatal(err)
	}
	res, err = e.r.RetrySetAsides(t.Context(), RetrySelection{Reason: reason})
	if err != nil || res.Applied != 5 || res.SetAside != 0 || len(res.Things) != 1 || res.Things[0] != (NamedThing{"dev-1", "bench"}) {
		t.Fatalf("retry after the delete: %+v, %v", res, err)
	}
	th := e.thing("dev-1")
	if th.Type != "bench" || th.Messages != 5 || !th.FirstSeen.Equal(at(10)) || !th.LastSeen.Equal(at(14)) {
		t.Errorf("dev-1 after the retry: %+v", th)
	}
	if got := e.reported("dev-1"); got != `{"n":4}` {
		t.Errorf("dev-1 reported %s, want the newest record's", got)
	}
	if h, _ := e.r.History(t.Context(), "dev-1", HistoryQuery{}); len(h) != 1 || len(h[0].Points) != 5 {
		t.Errorf("dev-1 history %+v, want 5 points of n", h)
	}
	if c, _ := e.r.Counts(t.Context()); c.SetAside != 0 || c.Messages != 5 || c.Things != 1 {
		t.Errorf("counts after the retry: %+v", c)
	}
	if _, err := e.r.RetrySetAsides(t.Context(), RetrySelection{Reason: reason}); !errors.Is(err, ErrNotFound) {
		t.Errorf("retry again: %v, want ErrNotFound", err)
	}
	if m, _ := e.r.HighWater("gw1"); m != mark {
		t.Errorf("high-water mark %d after the retries, want %d", m, mark)
	}
	// Reopened, the registry holds the same: nothing applied twice, nothing set aside.
	e.reopen()
	if th := e.thing("dev-1"); th.Messages != 5 {
		t.Errorf("after reopening: %d messages, want 5", th.Messages)
	}
	e.send(rec("bench", "dev-1", 20, `{"n":9}`)) // the processor goes on after the mark
}

// TestRetrySetAsideOne: one record, by (gw, seq); an undecodable record is set aside again with
// its reason; a record set aside before migration 9 (no content format) is skipped and stays.
func TestRetrySetAsideOne(t *testing.T) {
	e := newEnv(t, Options{})
	e.send(rec("sensor", "a", 1, `{"v":1}`))
	bad := rec("sensor", "a", 2, `{"v":`)
	other := rec("meter", "a", 3, `{"w":1}`)
	bad.Seq, other.Seq = e.seq+1, e.seq+2
	e.seq += 2
	out := e.apply(e.batch(bad, other))
	if out[0].Result != processor.SetAside || out[1].Result != processor.SetAside {
		t.Fatalf("outcomes %+v", out)
	}
	badReason := out[0].Reason
	// An undecodable record, as the spool source hands it over.
	raw := []byte{9, 9, 9}
	e.seq++
	b := processor.NewBatch([]processor.Input{{Record: record.Record{Seq: e.seq}, Raw: raw, Err: errors.New("record version 9 not supported")}}, processor.DefaultDecoders())
	if o := e.apply(b); o[0].Result != processor.SetAside {
		t.Fatalf("undecodable: %+v", o)
	}
	rawSeq := e.seq

	res, err := e.r.RetrySetAsides(t.Context(), RetrySelection{GW: "gw1", Seq: other.Seq})
	if err != nil || res.SetAside != 1 || res.Applied != 0 {
		t.Fatalf("retry of meter/a: %+v, %v", res, err)
	}
	if err := e.r.DeleteThing(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	res, err = e.r.RetrySetAsides(t.Context(), RetrySelection{GW: "gw1", Seq: other.Seq})
	if err != nil || res.Applied != 1 || e.thing("a").Type != "meter" {
		t.Fatalf("retry of meter/a after the delete: %+v, %v", res, err)
	}
	res, err = e.r.RetrySetAsides(t.Context(), RetrySelection{Reason: badReason})
	if err != nil || res.SetAside != 1 {
		t.Fatalf("retry of the bad payload: %+v, %v", res, err)
	}
	res, err = e.r.RetrySetAsides(t.Context(), RetrySelection{GW: "", Seq: rawSeq})
	if err != nil || res.SetAside != 1 {
		t.Fatalf("retry of the undecodable record: %+v, %v", res, err)
	}
	page, _ := e.r.SetAsides(t.Context(), 10, "")
	if len(page.Records) != 2 || page.Records[0].Reason != "undecodable record: record version 9 not supported" ||
		string(page.Records[0].PayloadB64) != string(raw) || page.Records[1].Reason != badReason {
		t.Fatalf("set-aside records %+v", page.Records)
	}

	// A record set aside before its format was kept.
	if _, err := e.r.wdb.ExecContext(t.Context(), `UPDATE set_asides SET format = NULL WHERE seq = ?`, int64(bad.Seq)); err != nil {
		t.Fatal(err)
	}
	res, err = e.r.RetrySetAsides(t.Context(), RetrySelection{Reason: badReason})
	if err != nil || res.Skipped != 1 || res.SetAside != 0 || res.Applied != 0 {
		t.Fatalf("retry of a record without a format: %+v, %v", res, err)
	}
	if c, _ := e.r.Counts(t.Context()); c.SetAside != 2 {
		t.Errorf("set-aside records held %d, want 2", c.SetAside)
	}
	if _, err := e.r.RetrySetAsides(t.Context(), RetrySelection{GW: "gw1", Seq: 999}); !errors.Is(err, ErrNotFound) {
		t.Errorf("retry of no record: %v", err)
	}
}

// TestRetryConcurrent: retries of the same records at once, with the processor applying records
// meanwhile, apply each record once: the thing counts every record once.
func TestRetryConcurrent(t *testing.T) {
	e := newEnv(t, Options{})
	e.send(rec("sensor", "x", 1, `{"v":1}`))
	const n = 1200 // more than a chunk
	var recs []record.Record
	for i := range n {
		recs = append(recs, rec("other", "x", float64(2+i), `{"v":2}`))
	}
	e.apply(e.batch(recs...))
	if err := e.r.DeleteThing(t.Context(), "x"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([]RetryResult, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := e.r.RetrySetAsides(t.Context(), RetrySelection{Reason: "thing x exists with type sensor"})
			if err != nil && !errors.Is(err, ErrNotFound) {
				t.Error(err)
			}
			results[i] = res
		}()
	}
	for i := range 20 {
		e.send(rec("other", fmt.Sprintf("y-%d", i), float64(5000+i), `{"v":3}`))
	}
	wg.Wait()
	var applied int64
	for _, r := range results {
		applied += r.Applied
	}
	if applied != n || e.thing("x").Messages != n {
		t.Fatalf("applied %d (%+v), x has %d messages; want %d", applied, results, e.thing("x").Messages, n)
	}
	if c, _ := e.r.Counts(t.Context()); c.SetAside != 0 || c.Messages != n+20 {
		t.Errorf("counts %+v", c)
	}
}

// TestRetryBatch: a retry builds its batch with Options.Batch (the gateway's processor, which
// may add keys of its own, --seed-shadow on main), not only the default decoding.
func TestRetryBatch(t *testing.T) {
	e := newEnv(t, Options{Batch: func(in []processor.Input) *processor.Batch {
		b := processor.NewBatch(in, processor.DefaultDecoders())
		for i := range b.Updates {
			_ = b.Updates[i].Doc.SetValue("via", 1, []byte(`"processor"`))
		}
		return b
	}})
	e.send(rec("sensor", "a", 1, `{"v":1}`))
	r := rec("meter", "a", 2, `{"w":2}`)
	if o := e.apply(e.batch(r)); o[0].Result != processor.SetAside {
		t.Fatalf("%+v", o)
	}
	if err := e.r.DeleteThing(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	if res, err := e.r.RetrySetAsides(t.Context(), RetrySelection{Reason: "thing a exists with type sensor"}); err != nil || res.Applied != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	if got := e.reported("a"); got != `{"via":"processor","w":2}` {
		t.Errorf("reported %s, want the processor's batch", got)
	}
}
