package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
)

// TestFloodOfThingNames is issue 11's finding 4 after the bounds: one host posts records under
// 21,000 distinct thing names, then records its known things cannot apply (another type: 4.00
// at the door; stored by a gateway with --process none and set aside after a restart). With --max-things 1000 and --max-set-aside 50, exactly 1,000 names get 2.04 and the
// registry holds those 1,000 things; every other name gets 5.03 "thing limit reached" and is
// stored nowhere (not in the spool: accepted stays at what was acknowledged); the set-aside table
// keeps its newest 50 records and counts the others as dropped. Peak RSS is logged (measured
// against time in the soak test, not asserted here).
func TestFloodOfThingNames(t *testing.T) {
	const maxThings, maxSetAside, names, senders, misfits = 1000, 50, 21_000, 8, 200
	g := startGW(t, t.TempDir(), "--process", "local", "--max-things", fmt.Sprint(maxThings),
		"--max-set-aside", fmt.Sprint(maxSetAside))

	codes := floodNames(t, g, 0, names, senders)
	changed, refused := coapmsg.Changed.String()+" ", coapmsg.ServiceUnavailable.String()+" thing limit reached"
	if codes[changed] != maxThings || codes[refused] != names-maxThings || len(codes) != 2 {
		t.Fatalf("answers %v, want %d × 2.04 and %d × 5.03 \"thing limit reached\"", codes, maxThings, names-maxThings)
	}

	// Records of known things that cannot be applied (another type). The running gateway refuses
	// them at the door now (4.00: a 2.04 means the record will be applied); to fill the set-aside
	// table they are stored by a gateway that does not process (--process none, no registry to
	// check against), and the local processor sets them aside after the restart.
	var accepted []string
	waitFor(t, "the 1,000 things applied", func() bool {
		var st struct{ Things int64 }
		getJSON(t, g, "/api/status", &st)
		return st.Things == maxThings
	})
	var page struct {
		Things []apiThing `json:"things"`
		Total  int64      `json:"total"`
	}
	if getJSON(t, g, "/api/things?limit=1000", &page); page.Total != maxThings {
		t.Fatalf("registry holds %d things, want %d", page.Total, maxThings)
	}
	for _, th := range page.Things {
		accepted = append(accepted, th.Name)
	}
	post := func(g *gw, want coapmsg.Code) {
		t.Helper()
		c, err := coaptest.Dial(g.coap)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i := range misfits {
			resp, err := c.Post("/meter/"+accepted[i%len(accepted)], fmt.Sprintf(`{"n":%d}`, i))
			if err != nil || resp.Code != want {
				t.Fatalf("misfit %d: %v %v, want %v", i, resp, err, want)
			}
		}
	}
	post(g, coapmsg.BadRequest)
	m := scrape(t, g)
	for name, want := range map[string]float64{
		`coapgw_ingest_records_total{result="accepted"}`:      maxThings,
		`coapgw_ingest_records_total{result="thing_limit"}`:   names - maxThings,
		`coapgw_ingest_records_total{result="type_conflict"}`: misfits,
	} {
		if v := metricValue(t, m, name); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	dir := g.dataDir
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}
	g = startGW(t, dir, "--process", "none")
	post(g, coapmsg.Changed)
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}
	g = startGW(t, dir, "--process", "local", "--max-things", fmt.Sprint(maxThings),
		"--max-set-aside", fmt.Sprint(maxSetAside))
	var st struct {
		Things          int64 `json:"things"`
		SetAside        int64 `json:"setAside"`
		SetAsideDropped int64 `json:"setAsideDropped"`
	}
	waitFor(t, "every misfit set aside", func() bool {
		getJSON(t, g, "/api/status", &st)
		return st.SetAside+st.SetAsideDropped == misfits
	})
	if st.Things != maxThings || st.SetAside != maxSetAside || st.SetAsideDropped != misfits-maxSetAside {
		t.Errorf("status %+v, want %d things, %d set aside held, %d dropped", st, maxThings, maxSetAside, misfits-maxSetAside)
	}
	var errs struct {
		Records []struct {
			Reason  string          `json:"reason"`
			Payload json.RawMessage `json:"payload"`
		} `json:"records"`
		Total int64 `json:"total"`
	}
	if getJSON(t, g, "/api/errors?limit=100", &errs); errs.Total != maxSetAside || len(errs.Records) != maxSetAside {
		t.Fatalf("/api/errors: %d records, total %d, want %d", len(errs.Records), errs.Total, maxSetAside)
	}
	if want := fmt.Sprintf(`{"n":%d}`, misfits-1); string(errs.Records[0].Payload) != want {
		t.Errorf("newest set-aside record %q, want %s (the oldest are the ones dropped)", errs.Records[0].Payload, want)
	}

	m = scrape(t, g)
	for name, want := range map[string]float64{
		"coapgw_ingest_things":                    maxThings,
		"coapgw_registry_set_aside_records":       maxSetAside,
		"coapgw_registry_set_aside_dropped_total": misfits - maxSetAside,
	} {
		if v := metricValue(t, m, name); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	t.Logf("peak RSS %d MiB after %d names", vmHWM(t, g.cmd.Process.Pid)>>20, names)
	if err := g.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, g.stderr)
	}
}

// floodNames posts a record for each thing name flood-<from> … flood-<to-1> from senders
// clients of one host, and counts the answers by code and payload ("2.04 ", "5.03 thing limit
// reached"; "error" for no answer).
func floodNames(t testing.TB, g *gw, from, to, senders int) map[string]int {
	t.Helper()
	var next atomic.Int64
	next.Store(int64(from))
	var mu sync.Mutex
	codes := map[string]int{}
	clients := make([]*coaptest.Client, senders)
	for i := range clients {
		c, err := coaptest.Dial(g.coap)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(to); i = next.Add(1) - 1 {
				resp, err := c.Post(fmt.Sprintf("/sensor/flood-%d", i), `{"t":1}`)
				key := "error"
				if err == nil {
					key = resp.Code.String() + " " + string(resp.Payload)
				}
				mu.Lock()
				codes[key]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return codes
}

// BenchmarkFloodOfThingNames is the finding's flood (one host, distinct thing names, nearly all
// refused by --max-things 1000) against the binary, with the default settings otherwise: it
// reports the gateway's resident set size and the registry file's size after 20,000 names and
// at the end (-flood-names, default 200,000), and the rate of refused names.
// go test -run '^$' -bench FloodOfThingNames -benchtime 1x ./cmd/coapgw/ [-flood-names 1000000]
func BenchmarkFloodOfThingNames(b *testing.B) {
	const maxThings, first, senders = 1000, 20_000, 8
	total := *floodTotal
	for b.Loop() {
		dir := b.TempDir()
		g := startGW(b, dir, "--process", "local", "--max-things", fmt.Sprint(maxThings))
		size := func() int64 {
			var n int64
			for _, f := range []string{"registry.db", "registry.db-wal"} {
				if fi, err := os.Stat(filepath.Join(dir, f)); err == nil {
					n += fi.Size()
				}
			}
			return n
		}
		floodNames(b, g, 0, first, senders)
		rss1, db1 := procStatusBytes(b, g.cmd.Process.Pid, "VmRSS:"), size()
		start := time.Now()
		codes := floodNames(b, g, first, total, senders)
		el := time.Since(start)
		rss2, db2 := procStatusBytes(b, g.cmd.Process.Pid, "VmRSS:"), size()
		if codes["5.03 thing limit reached"] != total-first {
			b.Fatalf("answers %v", codes)
		}
		if v := metricValue(b, scrape(b, g), `coapgw_ingest_records_total{result="accepted"}`); v != maxThings {
			b.Fatalf("%v records accepted, want %d", v, maxThings)
		}
		b.ReportMetric(float64(rss1)/(1<<20), "rss-MiB@20k")
		b.ReportMetric(float64(rss2)/(1<<20), "rss-MiB@end")
		b.ReportMetric(float64(db1)/(1<<20), "registry-MiB@20k")
		b.ReportMetric(float64(db2)/(1<<20), "registry-MiB@end")
		b.ReportMetric(float64(total-first)/el.Seconds(), "refused/s")
		if err := g.stop(syscall.SIGTERM); err != nil {
			b.Fatalf("SIGTERM: %v", err)
		}
	}
}

var floodTotal = flag.Int("flood-names", 200_000, "BenchmarkFloodOfThingNames: names in all")
