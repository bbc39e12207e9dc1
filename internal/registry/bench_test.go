package registry

import (
	"fmt"
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
