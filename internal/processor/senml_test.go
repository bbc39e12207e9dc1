package processor_test

import (
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/record"
)

// TestSenMLBatch: a SenML pack's readings keep the device's times — in the document's leaves and
// in the item's readings, all of them — and an older pack does not overwrite a newer value.
func TestSenMLBatch(t *testing.T) {
	recv := time.Unix(1_800_000_000, 0).UTC()
	r1 := processortest.Rec("gw1", "sensor", "s1", recv, `[{"bn":"d/","bu":"Cel","bt":1799996400,"n":"temp","v":20},{"n":"temp","t":1800,"v":21},{"n":"hum","u":"%RH","t":1800,"v":40}]`)
	r1.ContentFormat = record.FormatSenMLJSON
	r2 := processortest.Rec("gw1", "sensor", "s1", recv.Add(time.Second), `[{"bn":"d/","bt":1799990000,"n":"temp","v":5}]`)
	r2.ContentFormat = record.FormatSenMLJSON
	b := processor.NewBatch(processortest.Inputs(r1, r2), processor.DefaultDecoders())
	it := b.Items[0]
	if it.Err != nil || len(it.Readings) != 3 {
		t.Fatalf("item: %v, %d readings, want 3", it.Err, len(it.Readings))
	}
	if got := it.Readings[0]; got.Name != "d/temp" || got.Unit != "Cel" || got.Time != 1799996400e9 || got.Num != 20 {
		t.Errorf("first reading %+v", got)
	}
	temp, ok := b.Updates[0].Doc.Root().Find("d/temp")
	if !ok || string(temp.Value()) != "21" || temp.Time() != 1799998200e9 {
		t.Errorf("d/temp in the update: %s at %d, want 21 at the device's time 1799998200e9", temp.Value(), temp.Time())
	}
	if got := string(b.Updates[0].Doc.AppendState(nil)); got != `{"d/hum":40,"d/temp":21}` {
		t.Errorf("state %s", got)
	}
}
