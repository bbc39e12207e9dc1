package sqs

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/coapgw/coapgw/internal/envelope"
	"github.com/coapgw/coapgw/internal/record"
)

// TestSeedEnvelope: with Config.Seed a JSON record goes out as the 2018 ingestor's message, a
// CBOR one (spooled before the switch) in the envelope; coapgw's reader takes both back.
func TestSeedEnvelope(t *testing.T) {
	p, fake := newTest(t, Config{Seed: true})
	rs := []record.Record{rec(1, []byte(`{"temp":21.5}`)), rec(2, []byte{0xa1, 0x61, 0x74, 0x01})}
	rs[1].ContentFormat = record.FormatCBOR
	if errs, err := p.Publish(context.Background(), rs); err != nil || errs != nil {
		t.Fatalf("publish: %v %v", errs, err)
	}
	reqs := fake.requests()
	if len(reqs) != 1 || len(reqs[0].Entries) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	body0 := aws.ToString(reqs[0].Entries[0].MessageBody)
	const want = `{"timestamp":1777636800,"ip":"192.0.2.1","path":"/sensor/dev-1","method":"POST","payload":"{\"temp\":21.5}"}`
	if body0 != want {
		t.Fatalf("JSON record: %s, want %s", body0, want)
	}
	body1 := aws.ToString(reqs[0].Entries[1].MessageBody)
	if envelope.IsSeed(body1) {
		t.Fatalf("CBOR record in the 2018 message: %s", body1)
	}
	for i, b := range []string{body0, body1} {
		got, err := envelope.DecodeAny(b)
		if err != nil || got.ID != rs[i].ID || string(got.Payload) != string(rs[i].Payload) {
			t.Fatalf("message %d read back: %+v %v", i, got, err)
		}
	}
}
