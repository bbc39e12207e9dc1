package coapmsg

import (
	"testing"
)

// typicalPOST is what a device sends the gateway: CON POST /sensor/dev-1 with a 4-byte token,
// Content-Format json and a small JSON body.
var typicalPOST = cat(hx("44 02 30 39 01020304 b6"), "sensor", hx("05"), "dev-1", hx("11 32 ff"),
	`{"temperature":21.5,"humidity":40,"battery":3.01}`)

func typicalResponse() Message {
	return Message{Type: Acknowledgement, Code: Changed, MID: 12345, Token: []byte{1, 2, 3, 4},
		Options: []Option{{Number: ContentFormat, Value: []byte{50}}, {Number: Size1, Value: []byte{4, 0}}},
		Payload: []byte(`{"ok":true}`)}
}

func skipAllocsUnderRace(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
}

func TestDecodeZeroAlloc(t *testing.T) {
	skipAllocsUnderRace(t)
	var m Message
	if err := m.Decode(typicalPOST); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() {
		if err := m.Decode(typicalPOST); err != nil {
			panic(err)
		}
	}); n != 0 {
		t.Fatalf("Decode of a typical POST into a reused Message: %v allocs, want 0", n)
	}
	// A fresh zero Message uses its inline option storage: only the Message itself (if it
	// escapes) may allocate, never the options.
	if n := testing.AllocsPerRun(1000, func() {
		m := new(Message)
		if err := m.Decode(typicalPOST); err != nil {
			panic(err)
		}
	}); n > 1 {
		t.Fatalf("Decode into a fresh Message: %v allocs, want ≤ 1 (the Message)", n)
	}
	// More than the 16 inline options: storage grows once, then is reused.
	var many []byte
	for _, c := range validCases() {
		if c.name == "40-options" {
			many = c.in
		}
	}
	if err := m.Decode(many); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() {
		_ = m.Decode(many)
		_ = m.Decode(typicalPOST)
	}); n != 0 {
		t.Fatalf("Decode of a 40-option message after warm-up: %v allocs, want 0", n)
	}
	// Empty ping and header-level rejects allocate nothing.
	for _, in := range [][]byte{hx("40 00 12 34"), hx("40 01"), hx("80 01 00 01")} {
		if n := testing.AllocsPerRun(1000, func() { _ = m.Decode(in) }); n != 0 {
			t.Errorf("Decode(% x): %v allocs, want 0", in, n)
		}
	}
}

func TestDecodeErrorZeroAlloc(t *testing.T) {
	skipAllocsUnderRace(t)
	// TESTPLAN A1/A2: rejecting a bad datagram allocates nothing — in particular nothing
	// proportional to a length the datagram claims — so a flood of garbage costs no GC.
	var m Message
	for _, bc := range badCases() {
		if n := testing.AllocsPerRun(200, func() { _ = m.Decode(bc.in) }); n != 0 {
			t.Errorf("%s: %v allocs, want 0", bc.name, n)
		}
	}
}

func TestAppendZeroAlloc(t *testing.T) {
	skipAllocsUnderRace(t)
	m := typicalResponse()
	buf := make([]byte, 0, 1500)
	if n := testing.AllocsPerRun(1000, func() {
		b, err := m.Append(buf[:0])
		if err != nil || len(b) == 0 {
			panic(err)
		}
	}); n != 0 {
		t.Fatalf("Append into a buffer with room: %v allocs, want 0", n)
	}
	// Re-encoding a decoded request (options aliasing the datagram) is also allocation-free.
	var req Message
	if err := req.Decode(typicalPOST); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() { _, _ = req.Append(buf[:0]) }); n != 0 {
		t.Fatalf("Append of a decoded POST: %v allocs, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() {
		b := AppendUint(buf[:0], 0xdeadbeef)
		_ = AppendOption(b, 60, b)
	}); n != 0 {
		t.Fatalf("AppendUint/AppendOption: %v allocs, want 0", n)
	}
}

func BenchmarkDecode(b *testing.B) {
	var m Message
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalPOST)))
	for b.Loop() {
		if err := m.Decode(typicalPOST); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeFormatError(b *testing.B) {
	in := hx("40 01 00 01 be ff ff 61") // claims a 65804-byte option value
	var m Message
	b.ReportAllocs()
	for b.Loop() {
		if m.Decode(in) == nil {
			b.Fatal("no error")
		}
	}
}

func BenchmarkAppend(b *testing.B) {
	m := typicalResponse()
	buf := make([]byte, 0, 1500)
	b.ReportAllocs()
	var n int
	for b.Loop() {
		out, err := m.Append(buf[:0])
		if err != nil {
			b.Fatal(err)
		}
		n = len(out)
	}
	b.SetBytes(int64(n))
}

func BenchmarkAppendRequest(b *testing.B) {
	var m Message
	if err := m.Decode(typicalPOST); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 1500)
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalPOST)))
	for b.Loop() {
		if _, err := m.Append(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
}
