package loadgen

import (
	"testing"

	"github.com/coapgw/coapgw/internal/record"
)

// TestFormatsSameReading: every --format's payload stands for the same JSON object (the
// gateway's own reading of it, record.ToJSON), so their rates compare; JSON's is PayloadSize
// bytes as before.
func TestFormatsSameReading(t *testing.T) {
	pad := []byte("xxxxxxxxxx")
	want := `{"temp":21.5,"seq":123456,"pad":"xxxxxxxxxx"}`
	for name, f := range formats {
		p := f.append(nil, 123456, pad)
		js, err := record.ToJSON(nil, uint16(f.cf), p, 6, 0)
		if err != nil || string(js) != want {
			t.Errorf("%s: %x reads as %s, %v; want %s", name, p, js, err, want)
		}
	}
	for _, seq := range []uint64{1, 123456, 1 << 40} {
		if p := formats["json"].append(nil, seq, make([]byte, padLen(64, seq))); len(p) != 64 {
			t.Errorf("seq %d: JSON payload %d bytes, want --payload-size 64", seq, len(p))
		}
	}
	for _, n := range []uint64{0, 23, 24, 255, 256, 65535, 65536, 1 << 32} {
		p := formats["cbor"].append(nil, n, nil)
		if _, err := record.ToJSON(nil, record.FormatCBOR, p, 6, 0); err != nil {
			t.Errorf("seq %d: %v", n, err)
		}
	}
}
