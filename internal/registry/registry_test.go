package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processor/spoolsource"
	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

// env is a registry under test with a fake clock and a record counter (gw1, seq 1, 2, ...).
type env struct {
	t    testing.TB
	r    *Registry
	path string
	opts Options
	seq  uint64
	now  time.Time
	mu   sync.Mutex
}

func newEnv(t testing.TB, opts Options) *env {
	e := &env{t: t, path: filepath.Join(t.TempDir(), "registry.db"), now: at(1000)}
	opts.Now = e.clock
	e.opts = opts
	e.open()
	t.Cleanup(func() { e.r.Close() })
	return e
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) setNow(t time.Time) {
	e.mu.Lock()
	e.now = t
	e.mu.Unlock()
}

func (e *env) open() {
	e.t.Helper()
	r, err := Open(e.path, e.opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.r = r
}

func (e *env) reopen() {
	e.t.Helper()
	if err := e.r.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

func rec(typ, id string, sec float64, payload string) record.Record {
	return processortest.Rec("gw1", typ, id, at(sec), payload)
}

// batch numbers recs after the previous batch's.
func (e *env) batch(recs ...record.Record) *processor.Batch {
	e.t.Helper()
	for i := range recs {
		if recs[i].Seq == 0 {
			e.seq++
			recs[i].Seq = e.seq
		}
	}
	return processortest.Batch(e.t, recs...)
}

func (e *env) apply(b *processor.Batch) []processor.Outcome {
	e.t.Helper()
	out, err := e.r.Apply(e.t.Context(), b)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// send applies recs as one batch and fails the test unless each was applied.
func (e *env) send(recs ...record.Record) {
	e.t.Helper()
	for i, o := range e.apply(e.batch(recs...)) {
		if o.Result != processor.Applied {
			e.t.Fatalf("record %d: %v %s", i, o.Result, o.Reason)
		}
	}
}

type shadowDoc struct {
	State struct {
		Reported map[string]any `json:"reported"`
	} `json:"state"`
	Metadata struct {
		Reported map[string]any `json:"reported"`
	} `json:"metadata"`
	Version   int64 `json:"version"`
	Timestamp int64 `json:"timestamp"`
}

func (e *env) shadow(name string) (shadowDoc, string) {
	e.t.Helper()
	b, err := e.r.Shadow(e.t.Context(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	var d shadowDoc
	if err := json.Unmarshal(b, &d); err != nil {
		e.t.Fatalf("shadow is not JSON: %v: %s", err, b)
	}
	return d, string(b)
}

func (e *env) reported(name string) string {
	e.t.Helper()
	d, _ := e.shadow(name)
	b, _ := json.Marshal(d.State.Reported)
	return string(b)
}

func (e *env) thing(name string) Thing {
	e.t.Helper()
	th, err := e.r.Thing(e.t.Context(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return th
}

func TestShadowMergeVersionAndMetadata(t *testing.T) {
	e := newEnv(t, Options{})
	e.send(rec("sensor", "a", 10, `{"temp":20,"env":{"hum":40}}`))
	e.send(rec("sensor", "a", 20, `{"temp":21}`))
	d, raw := e.shadow("a")
	want := fmt.Sprintf(`{"state":{"reported":{"env":{"hum":40},"temp":21}},"metadata":{"reported":{"env":{"hum":{"timestamp":%d}},"temp":{"timestamp":%d}}},"version":2,"timestamp":%d}`,
		at(10).Unix(), at(20).Unix(), at(1000).Unix())
	if raw != want {
		t.Errorf("shadow\n%s\nwant\n%s", raw, want)
	}
	if d.Version != 2 {
		t.Errorf("version %d", d.Version)
	}
	th := e.thing("a")
	if th.Type != "sensor" || th.Messages != 2 || th.Version != 2 || !th.FirstSeen.Equal(at(10)) || !th.LastSeen.Equal(at(20)) {
		t.Errorf("thing %+v", th)
	}
	// Several records of one thing in one batch: one update, one version step.
	e.send(rec("sensor", "a", 30, `{"temp":22}`), rec("sensor", "a", 31, `{"temp":23}`))
	if th := e.thing("a"); th.Version != 3 || th.Messages != 4 {
		t.Errorf("after a batch of 2: version %d messages %d, want 3 and 4", th.Version, th.Messages)
	}
}

func TestNullDeletion(t *testing.T) {
	e := newEnv(t, Options{})
	e.send(rec("sensor", "a", 1, `{"a":{"b":1,"c":2},"d":3,"e":{"f":{"g":1}}}`))
	e.send(rec("sensor", "a", 2, `{"a":{"b":null},"d":null,"e":{"f":null}}`))
	if got, want := e.reported("a"), `{"a":{"c":2}}`; got != want {
		t.Errorf("reported %s, want %s", got, want)
	}
	e.send(rec("sensor", "a", 3, `{"a":null}`))
	_, raw := e.shadow("a")
	if !strings.HasPrefix(raw, `{"state":{},"metadata":{},"version":3,`) {
		t.Errorf("shadow with everything deleted: %s", raw)
	}
}

func withSeq(r record.Record, seq uint64) record.Record {
	r.Seq = seq
	return r
}

// The registry-specific part of out-of-order delivery (the rest is in the sink conformance
// suite): the metadata timestamp of a property is its newest record's, and first/last seen span
// every record applied, a stale one included.
func TestOutOfOrderTimes(t *testing.T) {
	e := newEnv(t, Options{})
	e.send(rec("sensor", "a", 20, `{"temp":22}`))
	e.send(rec("sensor", "a", 10, `{"temp":11,"hum":50}`)) // older, later
	d, _ := e.shadow("a")
	md := d.Metadata.Reported
	if ts := md["temp"].(map[string]any)["timestamp"].(float64); int64(ts) != at(20).Unix() {
		t.Errorf("temp timestamp %v, want the newer record's", ts)
	}
	if ts := md["hum"].(map[string]any)["timestamp"].(float64); int64(ts) != at(10).Unix() {
		t.Errorf("hum timestamp %v, want its only record's", ts)
	}
	e.send(rec("sensor", "a", 30, `{"hum":null}`))
	e.send(rec("sensor", "a", 15, `{"hum":60,"temp":1}`)) // older than both: changes nothing
	th := e.thing("a")
	if !th.LastSeen.Equal(at(30)) || !th.FirstSeen.Equal(at(10)) {
		t.Errorf("seen %v – %v", th.FirstSeen, th.LastSeen)
	}
}

func TestShadowLimits(t *testing.T) {
	e := newEnv(t, Options{})
	half := strings.Repeat("x", 4500)
	e.send(rec("sensor", "a", 1, `{"a":"`+half+`"}`))
	out := e.apply(e.batch(rec("sensor", "a", 2, `{"b":"`+half+`"}`), rec("sensor", "a", 3, `{"c":1}`)))
	if out[0].Result != processor.SetAside || !strings.Contains(out[0].Reason, "over the 8192-byte limit") {
		t.Errorf("record making the shadow too big: %+v", out[0])
	}
	if out[1].Result != processor.Applied {
		t.Errorf("the record behind it: %+v", out[1])
	}
	d, _ := e.shadow("a")
	if _, ok := d.State.Reported["b"]; ok || d.State.Reported["c"] != 1.0 {
		t.Errorf("reported keys %v", len(d.State.Reported))
	}
	// Two records that fit alone but not together, in one batch: the first wins.
	e2 := newEnv(t, Options{})
	out = e2.apply(e2.batch(rec("sensor", "b", 1, `{"a":"`+half+`"}`), rec("sensor", "b", 2, `{"b":"`+half+`"}`)))
	if out[0].Result != processor.Applied || out[1].Result != processor.SetAside {
		t.Errorf("coalesced over the limit: %+v", out)
	}
	// Too deep in one payload.
	out = e2.apply(e2.batch(rec("sensor", "b", 3, `{"1":{"2":{"3":{"4":{"5":{"6":{"7":1}}}}}}}`)))
	if out[0].Result != processor.SetAside || !strings.Contains(out[0].Reason, "nested deeper than 6") {
		t.Errorf("7 levels: %+v", out[0])
	}
	page, err := e2.r.SetAsides(t.Context(), 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if page.Total != 2 || len(page.Records) != 2 || page.Records[0].Seq != 3 || !strings.Contains(page.Records[1].Reason, "8192") {
		t.Errorf("set asides %+v", page)
	}
}

// What the registry keeps of a record set aside for a type conflict (the conflict itself is in
// the sink conformance suite): its type and payload, and no thing type of its own; an
// undecodable payload is kept as bytes (base64 in JSON).
func TestSetAsideKept(t *testing.T) {
	e := newEnv(t, Options{})
	e.send(rec("sensor", "a", 1, `{"v":1}`))
	out := e.apply(e.batch(rec("meter", "a", 2, `{"v":2}`), rec("sensor", "a", 3, `{"v":3}`)))
	if out[0].Result != processor.SetAside || out[1].Result != processor.Applied {
		t.Fatalf("outcomes %+v", out)
	}
	page, _ := e.r.SetAsides(t.Context(), 10, "")
	if len(page.Records) != 1 || page.Records[0].Type != "meter" || string(page.Records[0].Payload) != `{"v":2}` {
		t.Errorf("set aside %+v", page.Records)
	}
	types, _ := e.r.ThingTypes(t.Context())
	if len(types) != 1 || types[0].Name != "sensor" || types[0].Things != 1 {
		t.Errorf("types %+v (a rejected record must not create its type)", types)
	}
	// The undecodable payload is kept, as base64.
	e.apply(e.batch(rec("sensor", "b", 1, "\xff\xfe")))
	page, _ = e.r.SetAsides(t.Context(), 1, "")
	if string(page.Records[0].PayloadB64) != "\xff\xfe" || page.Records[0].Payload != nil {
		t.Errorf("binary payload %+v", page.Records[0])
	}
}

// A spool entry that is not a record reaches the registry through the processor and is kept in
// the set-aside table with its raw bytes and the reason.
func TestUndecodableRecordKept(t *testing.T) {
	e := newEnv(t, Options{})
	raw := []byte{7, 1, 2, 0xff}
	b := processor.NewBatch(spoolsource.Decode([]spool.Entry{{Seq: 7, Data: raw}}), processor.DefaultDecoders())
	out := e.apply(b)
	if out[0].Result != processor.SetAside || !strings.Contains(out[0].Reason, "undecodable record") {
		t.Fatalf("outcome %+v", out[0])
	}
	page, err := e.r.SetAsides(t.Context(), 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 1 || page.Records[0].Seq != 7 || string(page.Records[0].PayloadB64) != string(raw) ||
		!strings.Contains(page.Records[0].Reason, "undecodable record") {
		t.Errorf("set aside %+v", page.Records)
	}
}

// TestSinkConformance runs the behaviour every sink shares (processortest) against the registry:
// it counts every new record as a message (a stale one too) and remembers the sequence numbers
// it processed (a redelivered record set aside before is a duplicate); Restart closes and
// reopens the file.
func TestSinkConformance(t *testing.T) {
	processortest.RunSinkConformance(t, func(t *testing.T) *processortest.SinkHarness {
		e := newEnv(t, Options{})
		ctx := t.Context()
		thing := func(name string) (Thing, bool) {
			t.Helper()
			th, err := e.r.Thing(ctx, name)
			if errors.Is(err, ErrNotFound) {
				return Thing{}, false
			}
			if err != nil {
				t.Fatal(err)
			}
			return th, true
		}
		counts := func() Counts {
			t.Helper()
			c, err := e.r.Counts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		return &processortest.SinkHarness{
			Sink:    e.r,
			Restart: func() processor.Sink { e.reopen(); return e.r },
			Reported: func(name string) string {
				if _, ok := thing(name); !ok {
					return ""
				}
				return e.reported(name)
			},
			ThingType: func(name string) string { th, _ := thing(name); return th.Type },
			Version:   func(name string) int64 { th, _ := thing(name); return th.Version },
			Snapshot: func(names ...string) string {
				var b strings.Builder
				fmt.Fprintf(&b, "%+v\n", counts())
				for _, n := range names {
					th, ok := thing(n)
					if !ok {
						fmt.Fprintf(&b, "%s: none\n", n)
						continue
					}
					_, sh := e.shadow(n)
					h, err := e.r.History(ctx, n, HistoryQuery{})
					if err != nil {
						t.Fatal(err)
					}
					fmt.Fprintf(&b, "%s: %+v\n%s\n%v\n", n, th, sh, h)
				}
				return b.String()
			},
			Stale:               processor.Applied,
			RedeliveredSetAside: processor.Duplicate,
			Messages:            func(name string) int64 { th, _ := thing(name); return th.Messages },
			Totals: func() processortest.Totals {
				c := counts()
				return processortest.Totals{Things: c.Things, Messages: c.Messages, SetAside: c.SetAside}
			},
		}
	})
}

func TestThingsPaging(t *testing.T) {
	e := newEnv(t, Options{})
	const n = 2500
	var recs []record.Record
	for i := range n {
		typ := "sensor"
		if i%5 == 0 {
			typ = "meter"
		}
		recs = append(recs, rec(typ, fmt.Sprintf("t-%04d", i), float64(i/3), `{"v":1}`)) // ties of 3
	}
	for i := 0; i < n; i += 1000 {
		e.send(recs[i:min(i+1000, n)]...)
	}
	collect := func(q ThingQuery) ([]Thing, int64) {
		var all []Thing
		var total int64
		for pages := 0; ; pages++ {
			p, err := e.r.Things(t.Context(), q)
			if err != nil {
				t.Fatal(err)
			}
			total = p.Total
			all = append(all, p.Things...)
			if p.Next == "" {
				return all, total
			}
			if pages > n {
				t.Fatal("paging does not end")
			}
			q.Cursor = p.Next
		}
	}
	for _, tc := range []struct {
		q     ThingQuery
		count int
		match func(Thing) bool
	}{
		{ThingQuery{Limit: 100}, n, func(Thing) bool { return true }},
		{ThingQuery{Limit: 7}, n, func(Thing) bool { return true }},
		{ThingQuery{Type: "meter", Limit: 33}, n / 5, func(th Thing) bool { return th.Type == "meter" }},
		{ThingQuery{Prefix: "t-01", Limit: 30}, 100, func(th Thing) bool { return strings.HasPrefix(th.Name, "t-01") }},
		{ThingQuery{Type: "sensor", Prefix: "t-00", Limit: 30}, 80, func(th Thing) bool {
			return th.Type == "sensor" && strings.HasPrefix(th.Name, "t-00")
		}},
		{ThingQuery{Type: "nope"}, 0, nil},
	} {
		all, total := collect(tc.q)
		if len(all) != tc.count || total != int64(tc.count) {
			t.Errorf("%+v: %d things, total %d, want %d", tc.q, len(all), total, tc.count)
		}
		seen := map[string]bool{}
		for i, th := range all {
			if seen[th.Name] {
				t.Errorf("%+v: %s twice", tc.q, th.Name)
			}
			seen[th.Name] = true
			if !tc.match(th) {
				t.Errorf("%+v: %s does not match", tc.q, th.Name)
			}
			if i > 0 && th.LastSeen.After(all[i-1].LastSeen) {
				t.Errorf("%+v: not newest first at %d", tc.q, i)
			}
		}
	}
	if _, err := e.r.Things(t.Context(), ThingQuery{Cursor: "bogus"}); !errors.Is(err, ErrInvalidCursor) {
		t.Errorf("bogus cursor: %v", err)
	}
}

// The paging queries are index range scans: no sort of the whole table, no OFFSET.
func TestThingsQueryPlan(t *testing.T) {
	e := newEnv(t, Options{})
	for _, q := range []string{
		`SELECT t.id FROM things t JOIN thing_types tt ON tt.id = t.type_id WHERE (t.seen, t.id) < (1, 1) ORDER BY t.seen DESC, t.id DESC LIMIT 10`,
		`SELECT t.id FROM things t JOIN thing_types tt ON tt.id = t.type_id WHERE t.type_id = 1 AND (t.seen, t.id) < (1, 1) ORDER BY t.seen DESC, t.id DESC LIMIT 10`,
	} {
		p := e.queryPlan(q)
		if strings.Contains(p, "TEMP B-TREE") || !strings.Contains(p, "INDEX things_by_") {
			t.Errorf("plan for %s:\n%s", q, p)
		}
	}
}

// queryPlan is SQLite's EXPLAIN QUERY PLAN of a query, its steps joined with "; ".
func (e *env) queryPlan(query string, args ...any) string {
	e.t.Helper()
	rows, err := e.r.rdb.QueryContext(e.t.Context(), "EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			e.t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	return strings.Join(plan, "; ")
}

func TestHistoryRetention(t *testing.T) {
	e := newEnv(t, Options{HistoryMaxPoints: 10, HistoryMaxAge: time.Hour, logMax: 7})
	for i := range 50 {
		e.send(rec("sensor", "a", float64(i), fmt.Sprintf(`{"temp":%d,"env":{"hum":%d},"s":"x"}`, i, 100+i)))
	}
	hist, err := e.r.History(t.Context(), "a", HistoryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].Property != "env.hum" || hist[1].Property != "temp" {
		t.Fatalf("history %+v", hist)
	}
	for _, s := range hist {
		if len(s.Points) != 10 || !s.Points[0].T.Equal(at(40)) || !s.Points[9].T.Equal(at(49)) {
			t.Errorf("%s: %d points from %v to %v, want the newest 10", s.Property, len(s.Points), s.Points[0].T, s.Points[len(s.Points)-1].T)
		}
	}
	if got := hist[1].Points[9].V; got != 49 {
		t.Errorf("last temp %v", got)
	}
	// Kept: the chunks covering the newest 10 entries (whole chunks of up to 7) and the log.
	var rows int
	e.r.rdb.QueryRow(`SELECT (SELECT sum(n) FROM history) + (SELECT coalesce(sum(entries), 0) FROM history_log)`).Scan(&rows)
	if rows < 10 || rows > 10+6+6 {
		t.Errorf("%d history entries kept for a limit of 10", rows)
	}
	one, _ := e.r.History(t.Context(), "a", HistoryQuery{Property: "temp", Limit: 3, Since: at(47)})
	if len(one) != 1 || len(one[0].Points) != 3 || one[0].Points[0].V != 47 {
		t.Errorf("one property, limit 3 since 47: %+v", one)
	}
	// Age: an hour later the points are hidden, and pruned by later batches.
	e.setNow(at(49).Add(time.Hour + time.Second))
	if hist, _ := e.r.History(t.Context(), "a", HistoryQuery{}); len(hist) != 0 {
		t.Errorf("expired points returned: %+v", hist)
	}
	for i := range 8 {
		e.send(rec("sensor", "b", float64(5000+i), `{"x":1}`))
	}
	e.r.rdb.QueryRow(`SELECT count(*) FROM history WHERE thing_id = (SELECT id FROM things WHERE name = 'a')`).Scan(&rows)
	if rows != 0 {
		t.Errorf("%d expired rows of a still stored", rows)
	}
	if _, err := e.r.History(t.Context(), "nope", HistoryQuery{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown thing: %v", err)
	}
}

func TestNotFound(t *testing.T) {
	e := newEnv(t, Options{})
	if _, err := e.r.Thing(t.Context(), "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Thing: %v", err)
	}
	if _, err := e.r.Shadow(t.Context(), "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Shadow: %v", err)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	e := newEnv(t, Options{})
	e.send(rec("sensor", "a", 1, `{"temp":1}`), rec("meter", "b", 2, `{"kwh":5}`))
	e.apply(e.batch(rec("sensor", "b", 3, `{"x":1}`)))
	_, sh := e.shadow("a")
	counts, _ := e.r.Counts(t.Context())
	e.reopen()
	if _, sh2 := e.shadow("a"); sh2 != sh {
		t.Errorf("shadow after reopen %s, was %s", sh2, sh)
	}
	if c, _ := e.r.Counts(t.Context()); c != counts || c.ThingTypes != 2 || c.SetAside != 1 {
		t.Errorf("counts after reopen %+v, were %+v", c, counts)
	}
	if h, _ := e.r.History(t.Context(), "b", HistoryQuery{}); len(h) != 1 || h[0].Points[0].V != 5 {
		t.Errorf("history after reopen %+v", h)
	}
	// The high-water mark survived: the old records are duplicates.
	out := e.apply(processortest.Batch(t, withSeq(rec("sensor", "a", 1, `{"temp":1}`), 1)))
	if out[0].Result != processor.Duplicate {
		t.Errorf("redelivery after reopen: %v", out[0].Result)
	}
	e.send(rec("sensor", "a", 4, `{"temp":4}`))
	if th := e.thing("a"); th.Messages != 2 || th.Version != 2 {
		t.Errorf("thing after reopen %+v", th)
	}
}

// A file at schema version 1 (before history and set-asides existed) is migrated on open and
// keeps its data.
func TestMigrationFromVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	r, err := Open(path, Options{schemaVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.wdb.Exec(`INSERT INTO thing_types (id, name, created_at, things) VALUES (1, 'sensor', 1, 1);
		INSERT INTO things (name, type_id, first_seen, last_seen, messages, version) VALUES ('old', 1, 5, 6, 7, 0);
		UPDATE totals SET things = 1, messages = 7; INSERT INTO applied VALUES ('gw1', 7)`); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var v int
	r.wdb.QueryRow(`PRAGMA user_version`).Scan(&v)
	if v != len(migrations) {
		t.Errorf("schema version %d, want %d", v, len(migrations))
	}
	th, err := r.Thing(t.Context(), "old")
	if err != nil || th.Messages != 7 {
		t.Fatalf("migrated thing %+v, %v", th, err)
	}
	out, err := r.Apply(t.Context(), processortest.Batch(t, withSeq(rec("sensor", "old", 9, `{"v":1}`), 7),
		withSeq(rec("sensor", "old", 10, `{"v":2}`), 8), withSeq(rec("sensor", "new", 10, `[]`), 9)))
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Result != processor.Duplicate || out[1].Result != processor.Applied || out[2].Result != processor.SetAside {
		t.Errorf("outcomes %+v", out)
	}
	c, _ := r.Counts(t.Context())
	if c.Messages != 8 || c.SetAside != 1 || c.Things != 1 {
		t.Errorf("counts %+v", c)
	}
	// A file from a newer binary is refused.
	r.wdb.Exec(`PRAGMA user_version = 99`)
	r.Close()
	if r2, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open(newer schema) = %v", err)
		if r2 != nil {
			r2.Close()
		}
	}
}

func TestSetAsidesPaging(t *testing.T) {
	e := newEnv(t, Options{})
	var recs []record.Record
	for i := range 250 {
		recs = append(recs, rec("sensor", "a", float64(i), fmt.Sprintf(`[%d]`, i)))
	}
	e.apply(e.batch(recs...))
	seen := map[uint64]bool{}
	cursor := ""
	for {
		p, err := e.r.SetAsides(t.Context(), 100, cursor)
		if err != nil {
			t.Fatal(err)
		}
		if p.Total != 250 {
			t.Errorf("total %d", p.Total)
		}
		for _, s := range p.Records {
			if seen[s.Seq] {
				t.Errorf("seq %d twice", s.Seq)
			}
			seen[s.Seq] = true
		}
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	if len(seen) != 250 {
		t.Errorf("%d set-aside records paged, want 250", len(seen))
	}
	if _, err := e.r.SetAsides(t.Context(), 10, "xyz"); !errors.Is(err, ErrInvalidCursor) {
		t.Errorf("bad cursor: %v", err)
	}
}

// A failed transaction leaves no trace, in the file or in the writer's memory.
func TestFailedApplyLeavesNoTrace(t *testing.T) {
	e := newEnv(t, Options{})
	e.send(rec("sensor", "a", 1, `{"v":1}`))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := e.r.Apply(ctx, e.batch(rec("sensor", "a", 2, `{"v":2}`), rec("meter", "z", 2, `{"v":2}`))); err == nil {
		t.Fatal("Apply with a cancelled context succeeded")
	}
	if got := e.reported("a"); got != `{"v":1}` {
		t.Errorf("reported %s after a failed apply", got)
	}
	// The same records again (never applied): applied now, once.
	e.seq -= 2
	e.send(rec("sensor", "a", 2, `{"v":2}`), rec("meter", "z", 2, `{"v":2}`))
	if th := e.thing("a"); th.Messages != 2 || th.Version != 2 {
		t.Errorf("thing %+v", th)
	}
	types, _ := e.r.ThingTypes(t.Context())
	if len(types) != 2 {
		t.Errorf("types %+v", types)
	}
}

// Reads run on their own connections while batches are written (run with -race).
func TestConcurrentReads(t *testing.T) {
	e := newEnv(t, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := e.r.Things(ctx, ThingQuery{Limit: 50}); err != nil && ctx.Err() == nil {
					t.Error(err)
				}
				if _, err := e.r.Shadow(ctx, "t-1"); err != nil && !errors.Is(err, ErrNotFound) && ctx.Err() == nil {
					t.Error(err)
				}
				e.r.Counts(ctx)
			}
		})
	}
	for b := range 20 {
		var recs []record.Record
		for i := range 50 {
			recs = append(recs, rec("sensor", fmt.Sprintf("t-%d", i), float64(b), fmt.Sprintf(`{"v":%d}`, b)))
		}
		e.send(recs...)
	}
	cancel()
	wg.Wait()
	if c, _ := e.r.Counts(t.Context()); c.Messages != 1000 {
		t.Errorf("messages %d", c.Messages)
	}
}

func TestClosedRegistry(t *testing.T) {
	e := newEnv(t, Options{})
	e.r.Close()
	if _, err := e.r.Apply(t.Context(), e.batch(rec("sensor", "a", 1, `{}`))); err == nil {
		t.Error("Apply after Close succeeded")
	}
	if err := e.r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A file at schema version 3 (history as one row per record in samples and recent, things
// ordered by last_seen) is migrated to chunks and the seen column, and keeps its history.
func TestMigrationFromVersion3KeepsHistory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	r, err := Open(path, Options{schemaVersion: 3})
	if err != nil {
		t.Fatal(err)
	}
	vals := func(prop int64, v float64) []byte { return appendValue(nil, prop, v) }
	if _, err := r.wdb.Exec(`INSERT INTO thing_types (id, name, created_at, things) VALUES (1, 'sensor', 1, 2);
		INSERT INTO things (id, name, type_id, first_seen, last_seen, messages, version) VALUES
			(1, 'a', 1, 5, ?, 3, 1), (2, 'b', 1, 5, ?, 1, 1);
		INSERT INTO properties (id, path) VALUES (1, 'temp'), (2, 'hum');
		UPDATE totals SET things = 2, messages = 4; INSERT INTO applied VALUES ('gw1', 4)`,
		at(3).UnixNano(), at(9).UnixNano()); err != nil {
		t.Fatal(err)
	}
	for _, row := range []struct {
		table string
		thing int64
		sec   float64
		vals  []byte
	}{
		{"samples", 1, 1, vals(1, 10)},
		{"samples", 1, 2, append(vals(1, 11), vals(2, 50)...)},
		{"recent", 1, 3, vals(1, 12)},
		{"recent", 2, 9, vals(2, 60)},
	} {
		if _, err := r.wdb.Exec(`INSERT INTO `+row.table+` (thing_id, t, vals) VALUES (?, ?, ?)`,
			row.thing, at(row.sec).UnixNano(), row.vals); err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	r, err = Open(path, Options{Now: func() time.Time { return at(100) }})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h, err := r.History(t.Context(), "a", HistoryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	want := []Series{
		{Property: "hum", Points: []Point{{T: at(2), V: 50}}},
		{Property: "temp", Points: []Point{{T: at(1), V: 10}, {T: at(2), V: 11}, {T: at(3), V: 12}}},
	}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("history of a after migration %+v, want %+v", h, want)
	}
	if h, _ := r.History(t.Context(), "b", HistoryQuery{}); len(h) != 1 || h[0].Points[0].V != 60 {
		t.Errorf("history of b after migration %+v", h)
	}
	p, err := r.Things(t.Context(), ThingQuery{})
	if err != nil || len(p.Things) != 2 || p.Things[0].Name != "b" {
		t.Errorf("things after migration %+v, %v", p, err)
	}
	// New records go on top of the migrated history.
	if _, err := r.Apply(t.Context(), processortest.Batch(t, withSeq(rec("sensor", "a", 20, `{"temp":13}`), 5))); err != nil {
		t.Fatal(err)
	}
	h, _ = r.History(t.Context(), "a", HistoryQuery{Property: "temp"})
	if len(h) != 1 || len(h[0].Points) != 4 || h[0].Points[3].V != 13 {
		t.Errorf("history of a after a new record %+v", h)
	}
}

func TestKnownThings(t *testing.T) {
	e := newEnv(t, Options{})
	if things, err := e.r.KnownThings(t.Context()); err != nil || len(things) != 0 {
		t.Fatalf("empty registry: %v %v", things, err)
	}
	e.send(rec("sensor", "a", 1, `{"temp":1}`), rec("meter", "b", 2, `{"kwh":5}`))
	things, err := e.r.KnownThings(t.Context())
	slices.SortFunc(things, func(x, y NamedThing) int { return strings.Compare(x.Name, y.Name) })
	if err != nil || !slices.Equal(things, []NamedThing{{"a", "sensor"}, {"b", "meter"}}) {
		t.Fatalf("KnownThings = %v %v, want [{a sensor} {b meter}]", things, err)
	}
}
