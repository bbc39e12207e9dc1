package main

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
)

// TestFloodOfThingNames is issue 11's finding 4 after the bounds: one host posts records under
// 21,000 distinct thing names, then records its known things cannot apply (another type: set
// aside). With --max-things 1000 and --max-set-aside 50, exactly 1,000 names get 2.04 and the
// registry holds those 1,000 things; every other name gets 5.03 "thing limit reached" and is
// stored nowhere (not in the spool: accepted stays at what was acknowledged); the set-aside table
// keeps its newest 50 records and counts the others as dropped. Peak RSS is logged (measured
// against time in the soak test, not asserted here).
func TestFloodOfThingNames(t *testing.T) {
	const maxThings, maxSetAside, names, senders, misfits = 1000, 50, 21_000, 8, 200
	g := startGW(t, t.TempDir(), "--process", "local", "--max-things", fmt.Sprint(maxThings),
		"--max-set-aside", fmt.Sprint(maxSetAside))

	// names distinct ids, from senders clients of one host; each answer counted by code.
	var next atomic.Int64
	var mu sync.Mutex
	codes := map[string]int{}
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			c, err := coaptest.Dial(g.coap)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			for i := next.Add(1) - 1; i < names; i = next.Add(1) - 1 {
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
	changed, refused := coapmsg.Changed.String()+" ", coapmsg.ServiceUnavailable.String()+" thing limit reached"
	if codes[changed] != maxThings || codes[refused] != names-maxThings || len(codes) != 2 {
		t.Fatalf("answers %v, want %d × 2.04 and %d × 5.03 \"thing limit reached\"", codes, maxThings, names-maxThings)
	}

	// Records of known things that cannot be applied: the thing exists with another type. Each
	// gets 2.04 (stored in the spool) and is set aside by the registry.
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
	c, err := coaptest.Dial(g.coap)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range misfits {
		resp, err := c.Post("/meter/"+accepted[i%len(accepted)], fmt.Sprintf(`{"n":%d}`, i))
		if err != nil || resp.Code != coapmsg.Changed {
			t.Fatalf("misfit %d: %v %v", i, resp, err)
		}
	}
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

	m := scrape(t, g)
	for name, want := range map[string]float64{
		`coapgw_ingest_records_total{result="accepted"}`:    maxThings + misfits,
		`coapgw_ingest_records_total{result="thing_limit"}`: names - maxThings,
		"coapgw_ingest_things":                              maxThings,
		"coapgw_registry_set_aside_records":                 maxSetAside,
		"coapgw_registry_set_aside_dropped_total":           misfits - maxSetAside,
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
