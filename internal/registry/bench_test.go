package registry

import (
	"flag"
	"fmt"
	"strings"
	"testing"

	"github.com/coapgw/coapgw/internal/record"
)

// BenchmarkHistoryRead measures History for one thing of 10,000 with a full history (1,000
// records) and 190,000 entries of all things in the log, not yet compacted: the worst case of
// a read.
func BenchmarkHistoryRead(b *testing.B) {
	const things, per = 10_000, 1000
	e := newEnv(b, Options{})

	send := func(n, from int) {
		recs := make([]record.Record, 0, 20000)
		for i := from; i < from+n; i++ {
			recs = append(recs, rec("sensor", fmt.Sprintf("dev-%05d", i%things), float64(i)/1000,
				fmt.Sprintf(`{"temp":%d.5,"hum":%d,"bat":3.1}`, i%40, i%90)))
			if len(recs) == cap(recs) {
				if _, err := e.r.Apply(b.Context(), e.batch(recs...)); err != nil {
					b.Fatal(err)
				}
				recs = recs[:0]
			}
		}
	}
	e.now = at(20_000)       // after every record, within HistoryMaxAge
	send(things*per, 0)      // every thing's history full, all compacted
	send(49_000, things*per) // the log nearly full
	var logged int
	e.r.rdb.QueryRow(`SELECT coalesce(sum(entries), 0) FROM history_log`).Scan(&logged)
	b.ResetTimer()
	for b.Loop() {
		h, err := e.r.History(b.Context(), "dev-00042", HistoryQuery{})
		if err != nil || len(h) != 3 || len(h[0].Points) != per {
			b.Fatalf("history: %d series, %v", len(h), err)
		}
	}
	b.ReportMetric(float64(logged), "log-entries")
}

// BenchmarkHistoryOnDisk measures what the history takes on disk at the default retention
// (1,000 records per thing, 7 days, no size cap): -things things (default 2,000) each send 1,500
// records of three numeric properties (so that every thing's history has been trimmed), through
// Apply, and the benchmark reports what dbstat measures for the history table and its index, per
// thing, the registry file (page_count × page_size) and the history extrapolated to the default
// --max-things (100,000), which is linear in things: each thing's chunks are its own rows. Run it
// once: go test -run '^$' -bench HistoryOnDisk -benchtime 1x ./internal/registry/
func BenchmarkHistoryOnDisk(b *testing.B) {
	const per, props = 1500, 3
	for b.Loop() {
		e := newEnv(b, Options{HistoryMaxBytes: -1})
		e.setNow(fillTime(uint64(*benchThings*per) + 10))
		e.fillHistory(*benchThings, per, props)
		hist := e.measuredHistoryBytes()
		var file, logBytes, thingBytes, entries int64
		if err := e.r.rdb.QueryRow(`SELECT (SELECT page_count FROM pragma_page_count) * (SELECT page_size FROM pragma_page_size),
			(SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = 'history_log'),
			(SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN (SELECT name FROM sqlite_schema WHERE tbl_name = 'things')),
			(SELECT sum(n) FROM history)`).Scan(&file, &logBytes, &thingBytes, &entries); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(hist)/float64(*benchThings), "history-B/thing")
		b.ReportMetric(float64(hist)/float64(entries), "history-B/entry")
		b.ReportMetric(float64(entries)/float64(*benchThings), "entries/thing")
		b.ReportMetric(float64(hist)/float64(*benchThings)*100_000/(1<<30), "history-GiB@100k-things")
		b.ReportMetric(float64(e.r.w.histBytes)/float64(hist), "estimate/dbstat")
		b.ReportMetric(float64(logBytes)/(1<<20), "log-MiB")
		b.ReportMetric(float64(thingBytes)/float64(*benchThings), "things-B/thing")
		b.ReportMetric(float64(file)/(1<<20), "file-MiB")
	}
}

// BenchmarkSetAsideOnDisk measures what the set-aside table takes on disk at the default cap
// (10,000 records) with payloads of the largest size the device API accepts by default
// (--max-payload 8192) and of 100 bytes: dbstat's pages for the table and its index.
// go test -run '^$' -bench SetAsideOnDisk -benchtime 1x ./internal/registry/
func BenchmarkSetAsideOnDisk(b *testing.B) {
	for b.Loop() {
		for _, size := range []int{100, 8192} {
			e := newEnv(b, Options{})
			payload := "[" + strings.Repeat("1", size-2) + "]" // valid JSON, not an object: set aside
			recs := make([]record.Record, 0, 20_000)
			for i := range DefaultMaxSetAside + 5000 {
				recs = append(recs, rec("sensor", fmt.Sprintf("dev-%06d", i), 1, payload))
			}
			e.apply(e.batch(recs...))
			var bytes, n int64
			if err := e.r.rdb.QueryRow(`SELECT (SELECT sum(pgsize) FROM dbstat WHERE name IN (SELECT name FROM sqlite_schema WHERE tbl_name = 'set_asides')),
				(SELECT count(*) FROM set_asides)`).Scan(&bytes, &n); err != nil {
				b.Fatal(err)
			}
			if n != DefaultMaxSetAside {
				b.Fatalf("%d set-aside records held, want %d", n, DefaultMaxSetAside)
			}
			b.ReportMetric(float64(bytes)/float64(n), fmt.Sprintf("B/record@%dB", size))
			b.ReportMetric(float64(bytes)/(1<<20), fmt.Sprintf("MiB@%dB", size))
		}
	}
}

var benchThings = flag.Int("things", 2000, "BenchmarkHistoryOnDisk: things")
