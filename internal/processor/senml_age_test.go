package processor_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/registry"
)

// TestSenMLOldReadings is the rule for readings older than the history's retention (README,
// "Payload formats"): the pack is applied, not set aside; a reading older than the retention
// never shows in history, and an old reading does not overwrite a newer value in the shadow.
// (Readings from the future beyond record.MaxFuture are refused by ingest: TestParseSenML.)
func TestSenMLOldReadings(t *testing.T) {
	now := time.Unix(1_800_000_000, 0).UTC()
	reg, err := registry.Open(filepath.Join(t.TempDir(), "r.db"), registry.Options{
		HistoryMaxAge: time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	p, err := processor.New(processor.Config{}, reg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	day := now.Add(-24 * time.Hour).Unix()
	packs := []string{
		// received now: one reading a day old (beyond the retention), one from now
		fmt.Sprintf(`[{"n":"temp","bt":%d,"v":5},{"n":"temp","t":0,"bt":0,"v":21},{"n":"hum","v":40}]`, day),
		// later, a pack of only old readings: the shadow keeps the newer values
		fmt.Sprintf(`[{"n":"temp","bt":%d,"v":6},{"n":"hum","v":1}]`, day+60),
	}
	for i, pk := range packs {
		r := processortest.Rec("gw1", "sensor", "s1", now.Add(time.Duration(i)*time.Second), pk)
		r.ContentFormat, r.Seq = record.FormatSenMLJSON, uint64(i+1)
		out, err := p.Process(context.Background(), []processor.Input{{Record: r}})
		if err != nil || out[0].Result != processor.Applied {
			t.Fatalf("pack %d: %+v, %v; want applied", i, out, err)
		}
	}
	st, err := reg.ReportedState(t.Context(), "s1")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(st.AppendState(nil)); got != `{"hum":40,"temp":21}` {
		t.Errorf("reported %s, want the newer values", got)
	}
	h, err := reg.History(t.Context(), "s1", registry.HistoryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range h {
		for _, pt := range s.Points {
			if pt.T.Before(now.Add(-time.Hour)) {
				t.Errorf("%s: a point at %v, older than the retention", s.Property, pt.T)
			}
		}
	}
	if len(h) != 2 || len(h[0].Points) != 1 || len(h[1].Points) != 1 {
		t.Errorf("history %+v, want hum and temp at now only", h)
	}
}
