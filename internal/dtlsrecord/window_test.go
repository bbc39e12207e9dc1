package dtlsrecord

import "testing"

func TestWindow(t *testing.T) {
	w := NewWindow(10) // 0..9 count as seen (pion's cutoff at a handover)
	for _, tc := range []struct {
		seq        uint64
		ok, newest bool
	}{
		{9, false, false},  // at the cutoff
		{12, true, true},   // a gap: 10 and 11 may still come
		{10, true, false},  // reordered, within the window
		{12, false, false}, // duplicate
		{11, true, false},
		{11, false, false},
		{12 + 64, true, true}, // moves the window by 64: 12 leaves it
		{12, false, false},    // too old
		{13, true, false},     // the oldest number the window still holds
		{13, false, false},
		{1000, true, true}, // a jump past the window clears it
		{1000 - 63, true, false},
		{1000 - 64, false, false},
	} {
		if got := w.Check(tc.seq); got != tc.ok {
			t.Fatalf("Check(%d) = %v, want %v", tc.seq, got, tc.ok)
		}
		if tc.ok {
			if got := w.Accept(tc.seq); got != tc.newest {
				t.Fatalf("Accept(%d) newest = %v, want %v", tc.seq, got, tc.newest)
			}
		}
	}
	if w.Next() != 1001 {
		t.Fatalf("Next() = %d", w.Next())
	}
	var z Window // no cutoff: 0 is acceptable
	if !z.Check(0) || z.Accept(0) != true || z.Check(0) {
		t.Fatal("zero window")
	}
}
