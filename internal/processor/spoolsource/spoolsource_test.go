package spoolsource_test

import (
	"errors"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processor/spoolsource"
	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/spool"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// The source hands over the spool's entries decoded once, in order, with the spool's sequence
// numbers; an entry that is not a record comes with its bytes and the reason; Commit moves the
// spool's cursor and Depth follows it; a closed spool ends the source with an error that says so
// to both the processor and the spool's users.
func TestSource(t *testing.T) {
	sp := spool.NewMemory(spool.Options{})
	defer sp.Close()
	a := processortest.Rec("gw1", "sensor", "a", t0, `{"v":1}`)
	b := processortest.Rec("gw1", "meter", "b", t0.Add(time.Second), `{"kwh":2}`)
	for _, data := range [][]byte{processortest.Entry(t, 0, a).Data, {7, 1, 2}, processortest.Entry(t, 0, b).Data} {
		if err := sp.Append(data, nil); err != nil {
			t.Fatal(err)
		}
	}
	src := spoolsource.New(sp)
	var _ processor.Source = src
	var _ interface{ Depth() int64 } = src // what processor.Run looks for to tell "caught up"
	var in []processor.Input
	for len(in) < 3 {
		got, err := src.Next(t.Context(), 10)
		if err != nil {
			t.Fatal(err)
		}
		in = append(in, got...)
	}
	if len(in) != 3 {
		t.Fatalf("Next = %d inputs, want 3", len(in))
	}
	if r := in[0].Record; r.Seq != 1 || r.GW != "gw1" || r.Type != "sensor" || r.ID != "a" || !r.ReceivedAt.Equal(t0) ||
		string(r.Payload) != `{"v":1}` || r.Peer != a.Peer || r.ContentFormat != a.ContentFormat || in[0].Err != nil || in[0].Raw != nil {
		t.Errorf("first input %+v", in[0])
	}
	if x := in[1]; x.Err == nil || string(x.Raw) != "\x07\x01\x02" || x.Record.Seq != 2 || x.Record.GW != "" {
		t.Errorf("undecodable input %+v", x)
	}
	if r := in[2].Record; r.Seq != 3 || r.Type != "meter" || in[2].Err != nil {
		t.Errorf("third input %+v", in[2])
	}
	if d := src.Depth(); d != 3 {
		t.Errorf("depth %d before commit, want 3", d)
	}
	if err := src.Commit(2); err != nil {
		t.Fatal(err)
	}
	if d, c := src.Depth(), sp.Stats().CommittedSeq; d != 1 || c != 2 {
		t.Errorf("after Commit(2): depth %d, cursor %d", d, c)
	}
	sp.Close()
	if _, err := src.Next(t.Context(), 10); !errors.Is(err, processor.ErrSourceClosed) || !errors.Is(err, spool.ErrClosed) {
		t.Errorf("Next on a closed spool = %v", err)
	}
}
