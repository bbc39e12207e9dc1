package spool

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRaiseSeq: a deleted spool directory restarts at 1; RaiseSeq moves it past a mark, the
// raised floor survives a restart without any append in between, appends continue above it, and
// RaiseSeq never lowers the sequence.
func TestRaiseSeq(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "spool")
	d := openT(t, dir, Options{})
	if !d.Fresh() {
		t.Fatal("a new spool is not Fresh")
	}
	var last uint64
	for range 5 {
		last = appendWait(t, d, []byte("x")).seq
	}
	d.Close()
	if d = openT(t, dir, Options{}); d.Fresh() {
		t.Fatal("a spool with state is Fresh")
	}
	if raised, err := d.RaiseSeq(last); err != nil || raised {
		t.Fatalf("RaiseSeq(%d) below the next seq = %v, %v; want false, nil", last, raised, err)
	}
	d.Close()

	// The operator deletes the spool: it starts over at 1.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	d = openT(t, dir, Options{})
	if st := d.Stats(); !d.Fresh() || st.NextSeq != 1 {
		t.Fatalf("after deleting the spool: fresh %v, %+v", d.Fresh(), st)
	}
	const mark = 1000
	if raised, err := d.RaiseSeq(mark + 1); err != nil || !raised {
		t.Fatalf("RaiseSeq = %v, %v; want true, nil", raised, err)
	}
	if st := d.Stats(); st.NextSeq != mark+1 {
		t.Fatalf("NextSeq after RaiseSeq = %d, want %d", st.NextSeq, mark+1)
	}
	d.Close()

	// Persisted before any append: a restart keeps it, and the spool is no longer Fresh.
	d = openT(t, dir, Options{})
	if st := d.Stats(); d.Fresh() || st.NextSeq < mark+1 {
		t.Fatalf("after restart: fresh %v, %+v; want next seq >= %d", d.Fresh(), st, mark+1)
	}
	r := appendWait(t, d, []byte("y"))
	if r.err != nil || r.seq <= mark {
		t.Fatalf("append after RaiseSeq: %+v, want seq > %d", r, mark)
	}
	if es := readN(t, d, 1); es[0].Seq != r.seq {
		t.Fatalf("Next = %d, want %d", es[0].Seq, r.seq)
	}
	if err := d.Commit(r.seq); err != nil {
		t.Fatal(err)
	}
	// Lowering is a no-op.
	before := d.Stats().NextSeq
	if raised, err := d.RaiseSeq(last); err != nil || raised || d.Stats().NextSeq != before {
		t.Fatalf("RaiseSeq(%d) lowered or failed: %v, %v, next %d (was %d)", last, raised, err, d.Stats().NextSeq, before)
	}
	d.Close()

	// The lease written by the append is not below the raised floor, and restarts keep going up.
	d = openT(t, dir, Options{})
	if r2 := appendWait(t, d, []byte("z")); r2.err != nil || r2.seq <= r.seq {
		t.Fatalf("append after second restart: %+v, want seq > %d", r2, r.seq)
	}
}

// TestRaiseSeqAboveLease: a raise far above the current lease is what the next lease extends
// from; an entry appended right after it survives a restart with its number.
func TestRaiseSeqAboveLease(t *testing.T) {
	dir := t.TempDir()
	d := openT(t, dir, Options{})
	appendWait(t, d, []byte("a"))
	least := uint64(1) << 60
	if raised, err := d.RaiseSeq(least); err != nil || !raised {
		t.Fatalf("RaiseSeq = %v, %v", raised, err)
	}
	r := appendWait(t, d, []byte("b"))
	if r.err != nil || r.seq != least {
		t.Fatalf("append = %+v, want seq %d", r, least)
	}
	d.Close()
	d = openT(t, dir, Options{})
	es := readN(t, d, 2)
	if es[0].Seq != 1 || es[1].Seq != least || string(es[1].Data) != "b" {
		t.Fatalf("entries after restart: %d %d %q", es[0].Seq, es[1].Seq, es[1].Data)
	}
	if st := d.Stats(); st.NextSeq <= least {
		t.Fatalf("next seq after restart %d, want > %d", st.NextSeq, least)
	}
}

func TestMemoryRaiseSeq(t *testing.T) {
	m := NewMemory(Options{})
	defer m.Close()
	if raised, err := m.RaiseSeq(50); err != nil || !raised {
		t.Fatalf("RaiseSeq = %v, %v", raised, err)
	}
	if r := appendWait(t, m, []byte("x")); r.seq != 50 {
		t.Fatalf("seq = %d, want 50", r.seq)
	}
	if raised, _ := m.RaiseSeq(10); raised || m.Stats().NextSeq != 51 {
		t.Fatalf("RaiseSeq lowered: next %d", m.Stats().NextSeq)
	}
}

// TestIncarnation: a spool directory keeps its incarnation across restarts, a new or replaced
// directory gets another one, and a damaged incarnation file is replaced rather than trusted.
func TestIncarnation(t *testing.T) {
	dir := t.TempDir()
	d := openT(t, dir, Options{})
	first := d.Incarnation()
	if !validIncarnation(first) {
		t.Fatalf("incarnation %q is not 16 hex digits", first)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = openT(t, dir, Options{})
	if got := d.Incarnation(); got != first {
		t.Errorf("after a restart the incarnation is %q, want %q", got, first)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	// The directory deleted and made again (a replacement instance's new volume).
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	d = openT(t, dir, Options{})
	if got := d.Incarnation(); got == first || !validIncarnation(got) {
		t.Errorf("a new directory has incarnation %q, want a new one (old %q)", got, first)
	}
	if other := openT(t, t.TempDir(), Options{}); other.Incarnation() == d.Incarnation() {
		t.Error("two spool directories share an incarnation")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(filepath.Join(dir, incarnationFile), []byte("not hex at all!!"), 0o640); err != nil {
		t.Fatal(err)
	}
	d = openT(t, dir, Options{})
	if got := d.Incarnation(); !validIncarnation(got) {
		t.Errorf("damaged file gave incarnation %q", got)
	}
	m1, m2 := NewMemory(Options{}), NewMemory(Options{})
	defer m1.Close()
	defer m2.Close()
	if m1.Incarnation() == m2.Incarnation() || !validIncarnation(m1.Incarnation()) {
		t.Errorf("memory logs' incarnations %q and %q", m1.Incarnation(), m2.Incarnation())
	}
}
