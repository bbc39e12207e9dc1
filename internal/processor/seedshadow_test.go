package processor_test

import (
	"context"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processortest"
)

// stateSink is a sink that keeps the state each update of the last batch renders.
type stateSink struct{ states map[string]string }

func (s *stateSink) Apply(ctx context.Context, b *processor.Batch) ([]processor.Outcome, error) {
	s.states = map[string]string{}
	for _, u := range b.Updates {
		s.states[u.Thing] = string(u.Doc.AppendState(nil))
	}
	return applyAll{}.Apply(ctx, b)
}

// TestSeedShadowKeys: with SeedShadow every thing's update carries online "true", uuid and type,
// winning over the device's own keys of those names (as the 2018 processor's merge did), one
// record or several; without it the update is the device's keys only.
func TestSeedShadowKeys(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	recs := processortest.Inputs(
		processortest.Rec("gw", "x-node", "dev-1", t0, `{"metric1":7,"type":"mine"}`),
		processortest.Rec("gw", "x-node", "dev-2", t0, `{"a":1}`),
		processortest.Rec("gw", "x-node", "dev-2", t0.Add(time.Second), `{"b":2,"online":false}`),
	)
	for i := range recs {
		recs[i].Record.Seq = uint64(i + 1)
	}
	for _, c := range []struct {
		seed       bool
		dev1, dev2 string
	}{
		{true, `{"metric1":7,"online":"true","type":"x-node","uuid":"dev-1"}`, `{"a":1,"b":2,"online":"true","type":"x-node","uuid":"dev-2"}`},
		{false, `{"metric1":7,"type":"mine"}`, `{"a":1,"b":2,"online":false}`},
	} {
		sink := &stateSink{}
		p, err := processor.New(processor.Config{SeedShadow: c.seed}, sink, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Process(t.Context(), recs); err != nil {
			t.Fatal(err)
		}
		if sink.states["dev-1"] != c.dev1 || sink.states["dev-2"] != c.dev2 {
			t.Errorf("SeedShadow %v: %v, want dev-1 %s, dev-2 %s", c.seed, sink.states, c.dev1, c.dev2)
		}
	}
}
