package processor_test

import (
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/record"
)

// BenchmarkDecodeFormats is the decode step of BenchmarkProcessRegistryFormats alone (no
// registry, no fsync): the same readings in each format, through DefaultDecoders, the readings
// too for SenML; cbor-viajson is CBOR through the reference decoder (CBORToJSON, then
// DecodeJSON), as DecodeCBOR was. One op is one record.
func BenchmarkDecodeFormats(b *testing.B) {
	decs := processor.DefaultDecoders()
	for _, f := range []struct {
		name string
		cf   uint16
	}{{"json", record.FormatJSON}, {"cbor", record.FormatCBOR}, {"senml-json", record.FormatSenMLJSON}, {"senml-cbor", record.FormatSenMLCBOR}, {"cbor-viajson", record.FormatCBOR}} {
		b.Run(f.name, func(b *testing.B) {
			recs := benchRecordsFormat(b, 1024, 1, time.Now(), f.cf)
			payloads := make([][]byte, len(recs))
			for i, e := range recs {
				var r record.Record
				if err := record.Decode(e.Data, &r); err != nil {
					b.Fatal(err)
				}
				payloads[i] = r.Payload
			}
			dec := decs[f.cf]
			if f.name == "cbor-viajson" {
				dec = processor.DecodeCBORViaJSON
			}
			rd, _ := dec.(processor.ReadingsDecoder)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processortest.ProcessCPU()
			for i := 0; i < b.N; i++ {
				p := payloads[i%len(payloads)]
				var err error
				if rd != nil {
					_, _, err = rd.DecodeReadings(p, 1)
				} else {
					_, err = dec.Decode(p, 1)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(processortest.ProcessCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
