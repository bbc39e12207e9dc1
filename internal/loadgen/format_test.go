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

// TestFormatSizes: the bytes each --format sends for the same reading, the size target of issue
// 12 (CBOR at least 30 % smaller than JSON) checked for the load generator's own encoders, which
// write the shortest float (21.5 as a half) and integer (seq) and SenML CBOR's integer labels.
// Without a pad the reading meets it at every seq; padded to --payload-size 64 (the default),
// the pad is text of the same length in every format and the saving falls below 30 %.
func TestFormatSizes(t *testing.T) {
	for _, c := range []struct {
		seq      uint64
		size     int // --payload-size; 0: no pad
		cbor     bool
		senmlMet bool
	}{
		{1, 0, true, true}, {1000, 0, true, true}, {123456, 0, true, true}, {1 << 40, 0, true, true},
		{1, 64, false, true}, {123456, 64, false, true},
	} {
		var pad []byte
		if c.size > 0 {
			pad = make([]byte, padLen(c.size, c.seq))
			for i := range pad {
				pad[i] = 'x'
			}
		}
		n := map[string]int{}
		for name, f := range formats {
			n[name] = len(f.append(nil, c.seq, pad))
		}
		saved := func(a, b string) float64 { return 1 - float64(n[b])/float64(n[a]) }
		t.Logf("seq %d, pad %d: json %d, cbor %d (%.0f %% smaller); senml-json %d, senml-cbor %d (%.0f %% smaller)",
			c.seq, len(pad), n["json"], n["cbor"], 100*saved("json", "cbor"), n["senml-json"], n["senml-cbor"], 100*saved("senml-json", "senml-cbor"))
		if got := saved("json", "cbor") >= 0.3; got != c.cbor {
			t.Errorf("seq %d, pad %d: CBOR %d bytes, JSON %d: target met %v, want %v", c.seq, len(pad), n["cbor"], n["json"], got, c.cbor)
		}
		if got := saved("senml-json", "senml-cbor") >= 0.3; got != c.senmlMet {
			t.Errorf("seq %d, pad %d: SenML CBOR %d bytes, SenML JSON %d: target met %v, want %v", c.seq, len(pad), n["senml-cbor"], n["senml-json"], got, c.senmlMet)
		}
	}
}
