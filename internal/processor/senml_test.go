package processor_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/coapgw/coapgw/internal/envelope"
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

// TestEnvelopeFormats is the AWS path: a record of each format goes through the queue envelope
// (CBOR and SenML CBOR as payload_b64) and the processor decodes it by its content_format into the
// same state, the JSON object's.
func TestEnvelopeFormats(t *testing.T) {
	recv := time.Unix(1_800_000_000, 0).UTC()
	cb, _ := cbor.Marshal(map[string]any{"temp": 21.5, "hum": 40})
	sc, _ := cbor.Marshal([]map[int]any{{0: "temp", 2: 21.5, 6: -60}, {0: "hum", 2: 40}, {0: "temp", 2: 21.5}})
	var ins []processor.Input
	for i, f := range []struct {
		cf      uint16
		payload []byte
	}{
		{record.FormatJSON, []byte(`{"temp":21.5,"hum":40}`)},
		{record.FormatCBOR, cb},
		{record.FormatSenMLJSON, []byte(`[{"n":"temp","v":20,"t":-60},{"n":"hum","v":40},{"n":"temp","v":21.5}]`)},
		{record.FormatSenMLCBOR, sc},
	} {
		r := processortest.Rec("gw1", "sensor", fmt.Sprintf("t%d", i), recv, string(f.payload))
		r.ContentFormat, r.Seq = f.cf, uint64(i+1)
		body, err := envelope.Encode(r)
		if err != nil {
			t.Fatal(err)
		}
		back, err := envelope.Decode(body)
		if err != nil || back.ContentFormat != f.cf {
			t.Fatalf("format %d: envelope %s decodes to cf %d, %v", f.cf, body, back.ContentFormat, err)
		}
		ins = append(ins, processor.Input{Record: back})
	}
	b := processor.NewBatch(ins, processor.DefaultDecoders())
	for i, it := range b.Items {
		if it.Err != nil || string(it.Doc.AppendState(nil)) != `{"hum":40,"temp":21.5}` {
			t.Errorf("record %d (cf %d): %v, state %s", i, it.Record.ContentFormat, it.Err, it.Doc.AppendState(nil))
		}
	}
	if n := len(b.Items[2].Readings); n != 3 {
		t.Errorf("SenML JSON through the envelope: %d readings, want 3", n)
	}
}
