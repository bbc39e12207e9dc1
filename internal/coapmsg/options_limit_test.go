package coapmsg

import (
	"bytes"
	"testing"
)

// hostileOptions is a CON POST with token 01020304, Uri-Path "x" and then n-1 empty instances of
// the elective option 1000: one byte each after the first.
func hostileOptions(n int) []byte {
	b := []byte{0x44, 0x02, 0x30, 0x39, 1, 2, 3, 4, 0xb1, 'x'}
	if n > 1 {
		b = append(b, 0xe0, 0x02, 0xd0) // delta 11 → 1000 (269 + 0x02d0 = 989), length 0
		b = append(b, bytes.Repeat([]byte{0x00}, n-2)...)
	}
	return b
}

// TestDecodeTooManyOptions: Decode takes MaxOptions options and stops at the next one with
// ErrTooManyOptions, the header and token decoded, without growing storage past MaxOptions, so a
// datagram of 14,000 empty options costs no more than one with 65.
func TestDecodeTooManyOptions(t *testing.T) {
	var m Message
	if err := m.Decode(hostileOptions(MaxOptions)); err != nil {
		t.Fatalf("%d options: %v", MaxOptions, err)
	}
	if len(m.Options) != MaxOptions {
		t.Fatalf("decoded %d options, want %d", len(m.Options), MaxOptions)
	}
	for _, n := range []int{MaxOptions + 1, 14_000} {
		err := m.Decode(hostileOptions(n))
		if err != ErrTooManyOptions {
			t.Fatalf("%d options: err %v, want ErrTooManyOptions", n, err)
		}
		if m.Type != Confirmable || m.Code != POST || m.MID != 0x3039 || !bytes.Equal(m.Token, []byte{1, 2, 3, 4}) {
			t.Fatalf("%d options: header %v %v %d %x not kept", n, m.Type, m.Code, m.MID, m.Token)
		}
		if len(m.Options) != MaxOptions || cap(m.Options) > MaxOptions {
			t.Fatalf("%d options: kept %d (cap %d), want %d", n, len(m.Options), cap(m.Options), MaxOptions)
		}
	}
	if raceEnabled {
		return
	}
	hostile := hostileOptions(14_000)
	if n := testing.AllocsPerRun(100, func() { _ = m.Decode(hostile); _ = m.Decode(typicalPOST) }); n != 0 {
		t.Fatalf("decoding 14,000 options into a reused Message: %v allocs, want 0", n)
	}
}
