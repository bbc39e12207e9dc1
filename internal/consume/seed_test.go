package consume

import (
	"errors"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/envelope"
	"github.com/coapgw/coapgw/internal/record"
)

// TestDecodeBodyBothShapes: the worker and the Lambda handler read an envelope and a message
// of the 2018 ingestor from one queue, telling them apart per message; a body that is neither
// is an error (the message is set aside).
func TestDecodeBodyBothShapes(t *testing.T) {
	env, err := envelope.Encode(record.Record{GW: "gw-1", Seq: 9, ReceivedAt: time.Unix(1700000000, 5).UTC(), Type: "sensor", ID: "new",
		ContentFormat: record.FormatJSON, Payload: []byte(`{"t":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	in, err := decodeBody(env)
	if err != nil || in.Record.GW != "gw-1" || in.Record.Seq != 9 || in.Record.ID != "new" {
		t.Fatalf("envelope: %+v %v", in, err)
	}
	old := `{"timestamp":1530792000,"ip":"192.0.2.1","path":"/x-node/old","method":"GET","payload":"{\"metric1\":7}"}`
	in, err = decodeBody(old)
	if err != nil || in.Record.GW != envelope.SeedGW || in.Record.Type != "x-node" || in.Record.ID != "old" ||
		string(in.Record.Payload) != `{"metric1":7}` || in.Record.ReceivedAt.Unix() != 1530792000 {
		t.Fatalf("2018 message: %+v %v", in, err)
	}
	if _, err := decodeBody(`{"path":"/only-one"}`); !errors.Is(err, envelope.ErrMalformed) {
		t.Fatalf("bad 2018 message: %v", err)
	}
}
