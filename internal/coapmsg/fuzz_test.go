package coapmsg

import (
	"bytes"
	"testing"
)

// FuzzDecode: Decode never panics; its error kind follows from the header; a decoded message
// lies inside the datagram, is in canonical form (Append reproduces the datagram exactly —
// the §3 option encoding leaves no choice) and decodes again to the same fields; and decoding
// into a dirty, reused Message gives the same result as into a fresh one.
func FuzzDecode(f *testing.F) {
	for _, c := range validCases() {
		f.Add(c.in)
	}
	for _, c := range badCases() {
		f.Add(c.in)
	}
	f.Add(typicalPOST)
	f.Fuzz(func(t *testing.T, data []byte) {
		var m Message
		err := m.Decode(data)
		k := kindOf(err)
		hk := headerKind(data)
		switch {
		case hk != kindOK && k != hk:
			t.Fatalf("Decode = %v (%v), want %v", err, k, hk)
		case hk == kindOK && k != kindOK && k != kindFormat:
			t.Fatalf("Decode = %v (%v), want nil or *FormatError", err, k)
		}
		if _, _, _, ok := Header(data); ok != (hk == kindOK) {
			t.Fatalf("Header ok = %v disagrees with Decode's header checks", ok)
		}

		// A reused Message, dirtied by a long datagram, behaves exactly like a fresh one.
		var reused Message
		_ = reused.Decode(typicalPOST)
		err2 := reused.Decode(data)
		if kindOf(err2) != k {
			t.Fatalf("reused Message: %v, fresh: %v", err2, err)
		}
		if err != nil {
			return
		}
		if !eqMsg(&reused, &m) {
			t.Fatalf("reused Message decoded differently:\n%+v\n%+v", reused, m)
		}
		checkDecoded(t, data, &m)

		out, err := m.Append(nil)
		if err != nil {
			t.Fatalf("Append of a decoded message: %v", err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("re-encoding differs\n got % x\nwant % x", out, data)
		}
		var again Message
		if err := again.Decode(out); err != nil {
			t.Fatalf("Decode(Append(m)) = %v", err)
		}
		if !eqMsg(&again, &m) {
			t.Fatalf("second decode differs:\n%+v\n%+v", again, m)
		}
	})
}
