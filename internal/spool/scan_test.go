package spool

import (
	"errors"
	"slices"
	"testing"
)

// TestScan: Scan lists the entries after the cursor (or all of them), in order, from a spool that is
// closed or still open, and stops when fn fails.
func TestScan(t *testing.T) {
	dir := t.TempDir()
	d := openT(t, dir, Options{SegmentBytes: 1 << 20})
	datas := entries("scan", 20, 30)
	seqs := okSeqs(t, appendAll(t, d, datas))
	readN(t, d, 20)
	if err := d.Commit(seqs[7]); err != nil {
		t.Fatal(err)
	}

	collect := func(all bool) ([]Entry, ScanStats) {
		t.Helper()
		var got []Entry
		st, err := Scan(dir, all, func(e Entry) error {
			got = append(got, Entry{e.Seq, slices.Clone(e.Data)})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got, st
	}
	// While the spool is open (one segment, so nothing was deleted).
	got, st := collect(false)
	checkEntries(t, got, seqMap(seqs[8:], datas[8:]))
	if st.Entries != 12 || st.Delivered != 8 || st.CommittedSeq != seqs[7] || st.Segments != 1 || st.Corrupt != 0 {
		t.Fatalf("ScanStats = %+v", st)
	}
	d.Close()
	got, st = collect(true)
	checkEntries(t, got, seqMap(seqs, datas))
	if st.Entries != 20 || st.Delivered != 0 {
		t.Fatalf("ScanStats(all) = %+v", st)
	}

	stop := errors.New("stop")
	n := 0
	if _, err := Scan(dir, true, func(Entry) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("Scan with a failing fn = %v after %d calls", err, n)
	}
	if _, err := Scan(t.TempDir()+"/missing", true, func(Entry) error { return nil }); err == nil {
		t.Fatal("Scan of a missing directory succeeded")
	}
}
