package registry

import (
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// setAsideSeqs pages through every set-aside record and returns their sequence numbers, newest
// first, and the total the pages report.
func (e *env) setAsideSeqs() ([]uint64, int64) {
	e.t.Helper()
	var seqs []uint64
	var total int64
	cursor := ""
	for {
		p, err := e.r.SetAsides(e.t.Context(), 3, cursor)
		if err != nil {
			e.t.Fatal(err)
		}
		total = p.Total
		for _, s := range p.Records {
			seqs = append(seqs, s.Seq)
		}
		if cursor = p.Next; cursor == "" {
			return seqs, total
		}
	}
}

// With MaxSetAside, the set-aside table keeps the newest records, the oldest are dropped and
// counted, the records applied in the same batches are not touched, and the list, the counts and
// the metrics agree, across a reopen too.
func TestMaxSetAside(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, Options{MaxSetAside: 5, Registerer: reg})
	bad := func(n int) []record.Record {
		var recs []record.Record
		for i := range n {
			recs = append(recs, rec("sensor", "x", float64(i), `[1]`))
		}
		return recs
	}
	// 3 set aside, 1 applied.
	out := e.apply(e.batch(append(bad(3), rec("sensor", "good", 1, `{"v":1}`))...))
	if out[3].Result != processor.Applied {
		t.Fatalf("good record: %+v", out[3])
	}
	// 4 more: 7 set aside, the oldest 2 (seq 1, 2) go.
	out = e.apply(e.batch(append(bad(4), rec("sensor", "good", 2, `{"v":2}`))...))
	for i, o := range out[:4] {
		if o.Result != processor.SetAside {
			t.Fatalf("record %d: %+v (the cap must not refuse a record)", i, o)
		}
	}
	if out[4].Result != processor.Applied {
		t.Fatalf("good record: %+v", out[4])
	}
	check := func(wantSeqs []uint64, dropped int64) {
		t.Helper()
		seqs, total := e.setAsideSeqs()
		if fmt.Sprint(seqs) != fmt.Sprint(wantSeqs) || total != int64(len(wantSeqs)) {
			t.Errorf("set aside %v (total %d), want %v", seqs, total, wantSeqs)
		}
		c, err := e.r.Counts(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if c.SetAside != int64(len(wantSeqs)) || c.SetAsideDropped != dropped || c.Messages != 2 {
			t.Errorf("counts %+v, want %d held, %d dropped, 2 messages", c, len(wantSeqs), dropped)
		}
	}
	check([]uint64{8, 7, 6, 5, 3}, 2)
	if got := testutil.ToFloat64(e.r.w.m.setAsideDropped); got != 2 {
		t.Errorf("coapgw_registry_set_aside_dropped_total %v, want 2", got)
	}
	if got := testutil.ToFloat64(e.r.w.m.setAsideHeld); got != 5 {
		t.Errorf("coapgw_registry_set_aside_records %v, want 5", got)
	}
	if n, err := testutil.GatherAndCount(reg, "coapgw_registry_set_aside_records", "coapgw_registry_set_aside_dropped_total"); err != nil || n != 2 {
		t.Errorf("registered metrics: %d, %v", n, err)
	}
	if th := e.thing("good"); th.Messages != 2 {
		t.Errorf("good thing %+v", th)
	}

	// A batch with more set-aside records than the cap keeps its newest ones.
	e.reopen()
	e.apply(e.batch(bad(12)...))
	check([]uint64{21, 20, 19, 18, 17}, 14)
	if got := testutil.ToFloat64(e.r.w.m.setAsideHeld); got != 5 {
		t.Errorf("coapgw_registry_set_aside_records after reopen %v, want 5", got)
	}
}

// A cap lowered under a table that holds more converges over batches, dropping at most
// setAsideDropPerApply more rows than a batch adds.
func TestMaxSetAsideLowered(t *testing.T) {
	e := newEnv(t, Options{MaxSetAside: 100_000})
	var recs []record.Record
	for i := range setAsideDropPerApply + 50 {
		recs = append(recs, rec("sensor", "x", float64(i), `[1]`))
	}
	e.apply(e.batch(recs...))
	e.opts.MaxSetAside = 10
	e.reopen()
	e.apply(e.batch(rec("sensor", "x", 1, `[1]`)))
	if _, total := e.setAsidesTotal(); total != 50 {
		t.Errorf("after one batch: %d held, want 50 (10,050 + 1 − (1 + 10,000))", total)
	}
	e.apply(e.batch(rec("sensor", "x", 1, `[1]`)))
	if _, total := e.setAsidesTotal(); total != 10 {
		t.Errorf("after two batches: %d held, want 10", total)
	}
}

func (e *env) setAsidesTotal() (SetAsidePage, int64) {
	e.t.Helper()
	p, err := e.r.SetAsides(e.t.Context(), 1, "")
	if err != nil {
		e.t.Fatal(err)
	}
	var n int64
	if err := e.r.rdb.QueryRowContext(e.t.Context(), `SELECT count(*) FROM set_asides`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	if n != p.Total {
		e.t.Errorf("set_asides holds %d rows, the list says %d", n, p.Total)
	}
	return p, n
}

// measuredHistoryBytes is what SQLite's dbstat table says the history table and its index
// occupy: their pages, overflow pages included.
func (e *env) measuredHistoryBytes() int64 {
	e.t.Helper()
	var n int64
	if err := e.r.rdb.QueryRowContext(e.t.Context(), `SELECT coalesce(sum(pgsize), 0) FROM dbstat
		WHERE name IN ('history', 'history_by_t_last')`).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// fillTime is the received_at of fillHistory's record seq: 10 records a second.
func fillTime(seq uint64) time.Time { return at(float64(seq) / 10) }

// fillHistory applies per records to each of things things, 20,000 records a batch, at
// fillTime(seq), with props numeric properties each.
func (e *env) fillHistory(things, per, props int) {
	e.t.Helper()
	recs := make([]record.Record, 0, 20_000)
	flush := func() {
		if len(recs) > 0 {
			if _, err := e.r.Apply(e.t.Context(), e.batch(recs...)); err != nil {
				e.t.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	var payload []byte
	for i := range things * per {
		payload = append(payload[:0], '{')
		for p := range props {
			if p > 0 {
				payload = append(payload, ',')
			}
			payload = fmt.Appendf(payload, `"p%d":%d.%d`, p, i%97, p)
		}
		payload = append(payload, '}')
		e.seq++
		r := processortest.Rec("gw1", "sensor", fmt.Sprintf("dev-%06d", i%things), fillTime(e.seq), string(payload))
		r.Seq = e.seq
		recs = append(recs, r)
		if len(recs) == cap(recs) {
			flush()
		}
	}
	flush()
}

// The history's size estimate (totals.history_bytes) is what dbstat measures, within 20%, for
// records of 1, 3 and 20 properties, with retention trimming and chunks appended to; it
// survives a reopen.
func TestHistorySizeEstimate(t *testing.T) {
	for _, props := range []int{1, 3, 20} {
		t.Run(fmt.Sprint(props), func(t *testing.T) {
			e := newEnv(t, Options{HistoryMaxPoints: 200, logMax: 5_000})
			e.setNow(at(2e4)) // every record within HistoryMaxAge
			e.fillHistory(300, 500, props)
			est, got := e.r.w.histBytes, e.measuredHistoryBytes()
			t.Logf("%d properties: estimate %d bytes, dbstat %d bytes (%.2f)", props, est, got, float64(est)/float64(got))
			if got == 0 || est < got*8/10 || est > got*12/10 {
				t.Errorf("estimate %d bytes, dbstat measures %d", est, got)
			}
			if re := e.recomputedHistoryBytes(); re != est {
				t.Errorf("estimate %d bytes, recomputed over the table %d", est, re)
			}
			e.reopen()
			if e.r.w.histBytes != est {
				t.Errorf("after reopen: %d bytes, want %d", e.r.w.histBytes, est)
			}
		})
	}
}

// With HistoryMaxBytes, the history stays within the cap on disk (as dbstat measures it) and
// loses its oldest entries first: every thing keeps its newest ones, and what is left is the
// most recent stretch of time.
func TestHistoryMaxBytes(t *testing.T) {
	const limit = 1 << 20
	e := newEnv(t, Options{HistoryMaxPoints: 200, HistoryMaxBytes: limit, logMax: 5_000})
	e.setNow(at(2e4))
	e.fillHistory(300, 500, 3) // about 5 MB without the cap (TestHistorySizeEstimate)
	est, got := e.r.w.histBytes, e.measuredHistoryBytes()
	t.Logf("estimate %d bytes, dbstat %d bytes, cap %d", est, got, limit)
	if re := e.recomputedHistoryBytes(); re != est {
		t.Errorf("estimate %d bytes, recomputed over the table %d", est, re)
	}
	if est > limit || got > limit*11/10 {
		t.Errorf("history %d bytes (estimate %d), cap %d", got, est, limit)
	}
	if est < limit*9/10 {
		t.Errorf("history %d bytes: far more dropped than the cap needs", est)
	}
	// The oldest chunks are found through the index, not by sorting the table.
	var plan []string
	err := eachRow(e.r.rdb.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+stmtSQL["selOldest"], 10))(func(rows *sql.Rows) error {
		var id, parent, notused int
		var detail string
		err := rows.Scan(&id, &parent, &notused, &detail)
		plan = append(plan, detail)
		return err
	})
	if p := strings.Join(plan, "; "); err != nil || strings.Contains(p, "TEMP B-TREE") || !strings.Contains(p, "history_by_t_last") {
		t.Errorf("plan for the oldest chunks: %s %v", p, err)
	}
	dropped := testutil.ToFloat64(e.r.w.m.historyDropped)
	if dropped == 0 || testutil.ToFloat64(e.r.w.m.historyBytes) != float64(est) {
		t.Errorf("metrics: %v entries dropped, %v bytes", dropped, testutil.ToFloat64(e.r.w.m.historyBytes))
	}
	// Oldest first: the chunks left all end after the newest chunk dropped, so no thing lost a
	// newer entry while an older one of another was kept; every thing keeps its newest entry.
	var oldestLeft int64
	if err := e.r.rdb.QueryRow(`SELECT min(t_last) FROM history`).Scan(&oldestLeft); err != nil {
		t.Fatal(err)
	}
	last := e.seq // the newest record's time, in seconds after t0
	if cutoff := fillTime(last / 2).UnixNano(); oldestLeft < cutoff {
		t.Errorf("oldest chunk left ends at %v, want after %v (a cap of a fifth of the history)", fromNanos(oldestLeft), fromNanos(cutoff))
	}
	for _, th := range []string{"dev-000000", "dev-000150", "dev-000299"} {
		h, err := e.r.History(t.Context(), th, HistoryQuery{Property: "p1"})
		if err != nil || len(h) != 1 || len(h[0].Points) == 0 {
			t.Fatalf("%s: %v %v", th, h, err)
		}
		if pts := h[0].Points; pts[len(pts)-1].T.Before(fillTime(last - 300)) {
			t.Errorf("%s: newest point %v, want its last record's", th, pts[len(pts)-1].T)
		}
	}
}

// Migration 6 computes the size estimate of a history stored before it.
func TestMigrationToBoundsCountsHistory(t *testing.T) {
	e := newEnv(t, Options{HistoryMaxPoints: 200, logMax: 5_000})
	e.setNow(at(2e4))
	e.fillHistory(100, 300, 3)
	want := e.r.w.histBytes
	if want == 0 {
		t.Fatal("no history written")
	}
	if _, err := e.r.wdb.ExecContext(t.Context(), `DROP INDEX things_by_type_name; DROP INDEX things_by_first;
		DROP INDEX things_by_type_first; DROP INDEX things_by_counted; DROP INDEX things_by_type_counted;
		ALTER TABLE things DROP COLUMN counted; DROP INDEX set_asides_by_reason;
		ALTER TABLE set_asides DROP COLUMN format; -- migration 9
		DROP INDEX history_by_t_last;
		ALTER TABLE totals DROP COLUMN set_aside_dropped; ALTER TABLE totals DROP COLUMN history_bytes;
		DROP TABLE desired; ALTER TABLE properties DROP COLUMN unit; -- migrations 7 and 8
		PRAGMA user_version = 5`); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	if e.r.w.histBytes != want {
		t.Errorf("after migration 6: %d bytes, want %d", e.r.w.histBytes, want)
	}
}

// recomputedHistoryBytes is the size estimate computed from scratch over the history table.
func (e *env) recomputedHistoryBytes() int64 {
	e.t.Helper()
	var total int64
	err := eachRow(e.r.rdb.QueryContext(e.t.Context(), `SELECT octet_length(data) FROM history`))(func(rows *sql.Rows) error {
		var l int
		err := rows.Scan(&l)
		total += chunkCost(l, e.r.w.pageSize)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return total
}

// A compaction that writes a chunk starting at the time of an existing chunk of the same thing
// appends to it; the size estimate follows (it equals the estimate recomputed over the table).
func TestHistorySizeAppendedChunk(t *testing.T) {
	e := newEnv(t, Options{logMax: 2})
	e.send(rec("sensor", "a", 1, `{"v":1}`), rec("sensor", "a", 2, `{"v":2}`)) // the log is full: frozen
	e.send(rec("sensor", "b", 1, `{"v":1}`))                                   // compacts a: chunk at t=1
	e.send(rec("sensor", "a", 1, `{"v":3}`), rec("sensor", "a", 3, `{"v":4}`)) // frozen again, with a's t=1
	e.send(rec("sensor", "b", 2, `{"v":2}`))
	e.send(rec("sensor", "b", 3, `{"v":3}`))
	var chunks, n int
	if err := e.r.rdb.QueryRow(`SELECT count(*), sum(n) FROM history WHERE thing_id = (SELECT id FROM things WHERE name = 'a')`).Scan(&chunks, &n); err != nil {
		t.Fatal(err)
	}
	if chunks != 1 || n != 4 {
		t.Fatalf("thing a: %d chunks of %d entries, want one chunk of 4 (appended to)", chunks, n)
	}
	if got, want := e.r.w.histBytes, e.recomputedHistoryBytes(); got != want || got == 0 {
		t.Errorf("estimate %d bytes, recomputed %d", got, want)
	}
}
