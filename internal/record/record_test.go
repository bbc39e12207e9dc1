package record

import (
	"bytes"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	in := Record{GW: "gw-1", ReceivedAt: time.Unix(1700000000, 123456789).UTC(), Type: "sensor", ID: "dev-1",
		ContentFormat: 50, Payload: []byte(`{"temp":21.5}`), Peer: "127.0.0.1:40000"}
	b, err := Append(nil, &in)
	if err != nil {
		t.Fatal(err)
	}
	var out Record
	if err := Decode(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.GW != in.GW || !out.ReceivedAt.Equal(in.ReceivedAt) || out.Type != in.Type || out.ID != in.ID ||
		out.ContentFormat != in.ContentFormat || !bytes.Equal(out.Payload, in.Payload) || out.Peer != in.Peer {
		t.Fatalf("round trip: got %+v want %+v", out, in)
	}
}

func TestAppendRejectsLongFields(t *testing.T) {
	long := string(bytes.Repeat([]byte("a"), 256))
	if _, err := Append(nil, &Record{Type: long}); err != ErrTooLong {
		t.Fatalf("err = %v, want ErrTooLong", err)
	}
}

func TestDecodeRejectsTruncation(t *testing.T) {
	b, _ := Append(nil, &Record{GW: "g", Type: "t", ID: "i", Payload: []byte("{}")})
	for i := 0; i < len(b); i++ {
		var r Record
		if err := Decode(b[:i], &r); err == nil {
			t.Fatalf("Decode of %d/%d bytes succeeded", i, len(b))
		}
	}
	var r Record
	if err := Decode(append(b, 'x'), &r); err == nil {
		t.Fatal("Decode with a trailing byte succeeded")
	}
	b[0] = 9
	if err := Decode(b, &r); err == nil {
		t.Fatal("Decode of version 9 succeeded")
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := Append(nil, &Record{GW: "g", Type: "t", ID: "i", Payload: []byte(`{"a":1}`), Peer: "[::1]:5"})
	f.Add(b)
	f.Add([]byte{1})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 50, 255})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Record
		if Decode(data, &r) != nil {
			return
		}
		again, err := Append(nil, &r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var r2 Record
		if err := Decode(again, &r2); err != nil || r2.ID != r.ID || !bytes.Equal(r2.Payload, r.Payload) {
			t.Fatalf("second round trip differs: %v", err)
		}
	})
}
