package spool

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// segFrames describes the frames of one segment file as written.
type segFrames struct {
	first uint64
	path  string
	offs  []int64
	seqs  []uint64
}

// listFrames decodes every segment in dir (before any damage).
func listFrames(t *testing.T, dir string) []segFrames {
	t.Helper()
	firsts, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []segFrames
	for i, first := range firsts {
		var next uint64
		if i+1 < len(firsts) {
			next = firsts[i+1]
		}
		sf := segFrames{first: first, path: segmentPath(dir, first)}
		dec, _, err := scanSegmentFile(dir, first, next, func(seq uint64, _ []byte, off int64) {
			sf.offs = append(sf.offs, off)
			sf.seqs = append(sf.seqs, seq)
		})
		if err != nil || len(dec.corrupt) != 0 {
			t.Fatalf("segment %d before damage: %v, corrupt %v", first, err, dec.corrupt)
		}
		out = append(out, sf)
	}
	return out
}

// buildSpool writes 30 entries of 100 bytes (116-byte frames) one by one to a spool with 600-byte
// segments, so there are 6 segments of 5 frames each. (Without fsync: what is tested is what Open
// makes of the files.)
func buildSpool(t *testing.T, dir string) map[uint64][]byte {
	t.Helper()
	d := openT(t, dir, Options{SegmentBytes: 600, NoSync: true})
	want := map[uint64][]byte{}
	for _, data := range entries("crash", 30, 100) {
		r := appendWait(t, d, data)
		if r.err != nil {
			t.Fatal(r.err)
		}
		want[r.seq] = data
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return want
}

func modify(t *testing.T, path string, fn func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, fn(b), 0o640); err != nil {
		t.Fatal(err)
	}
}

func dirHash(t *testing.T, dir string) [32]byte {
	t.Helper()
	h := sha256.New()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		h.Write([]byte(de.Name()))
		h.Write(b)
	}
	return [32]byte(h.Sum(nil))
}

// TestCrashRecovery damages a closed spool in the ways a crash, a bad disk or bit rot do, and checks
// that Scan and Open find every intact entry, count the damage, never fail, and that the spool keeps
// working: a torn tail is truncated (not counted again), damage elsewhere is skipped on every open.
func TestCrashRecovery(t *testing.T) {
	garbage := func(n int) []byte {
		rnd := rand.New(rand.NewPCG(1, uint64(n)))
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.UintN(256))
		}
		return b
	}
	tests := []struct {
		name string
		// damage damages the spool and returns the seqs it destroyed.
		damage        func(t *testing.T, segs []segFrames) []uint64
		corrupt       int64 // corrupt regions counted by the first open
		corruptReopen int64 // by the open after that
	}{
		{"torn tail mid-data", func(t *testing.T, segs []segFrames) []uint64 {
			s := segs[len(segs)-1]
			modify(t, s.path, func(b []byte) []byte { return b[:s.offs[4]+frameHeaderSize+10] })
			return s.seqs[4:]
		}, 1, 0},
		{"torn tail mid-header", func(t *testing.T, segs []segFrames) []uint64 {
			s := segs[len(segs)-1]
			modify(t, s.path, func(b []byte) []byte { return b[:s.offs[4]+7] })
			return s.seqs[4:]
		}, 1, 0},
		{"zeroed length at tail", func(t *testing.T, segs []segFrames) []uint64 {
			s := segs[len(segs)-1]
			modify(t, s.path, func(b []byte) []byte { clear(b[s.offs[4]+4 : s.offs[4]+8]); return b })
			return s.seqs[4:]
		}, 1, 0},
		{"zero-filled tail", func(t *testing.T, segs []segFrames) []uint64 {
			modify(t, segs[len(segs)-1].path, func(b []byte) []byte { return append(b, make([]byte, 4096)...) })
			return nil
		}, 1, 0},
		{"flipped CRC bit at tail", func(t *testing.T, segs []segFrames) []uint64 {
			s := segs[len(segs)-1]
			modify(t, s.path, func(b []byte) []byte { b[s.offs[4]] ^= 0x04; return b })
			return s.seqs[4:]
		}, 1, 0},
		{"garbage appended", func(t *testing.T, segs []segFrames) []uint64 {
			modify(t, segs[len(segs)-1].path, func(b []byte) []byte { return append(b, garbage(1000)...) })
			return nil
		}, 1, 0},
		{"flipped data bit in a middle record", func(t *testing.T, segs []segFrames) []uint64 {
			s := segs[2]
			modify(t, s.path, func(b []byte) []byte { b[s.offs[2]+frameHeaderSize+50] ^= 0x10; return b })
			return s.seqs[2:3]
		}, 1, 1},
		{"flipped length bit in a middle record", func(t *testing.T, segs []segFrames) []uint64 {
			s := segs[2]
			modify(t, s.path, func(b []byte) []byte { b[s.offs[2]+4] ^= 0x01; return b })
			return s.seqs[2:3]
		}, 1, 1},
		{"absurd length in a middle record", func(t *testing.T, segs []segFrames) []uint64 {
			s := segs[2]
			modify(t, s.path, func(b []byte) []byte {
				binary.LittleEndian.PutUint32(b[s.offs[2]+4:], 0xFFFFFFFF)
				return b
			})
			return s.seqs[2:3]
		}, 1, 1},
		{"flipped seq bit in a middle record", func(t *testing.T, segs []segFrames) []uint64 {
			s := segs[2]
			modify(t, s.path, func(b []byte) []byte { b[s.offs[2]+8] ^= 0x01; return b })
			return s.seqs[2:3]
		}, 1, 1},
		{"stale frame with a lower seq in the middle", func(t *testing.T, segs []segFrames) []uint64 {
			s := segs[2]
			modify(t, s.path, func(b []byte) []byte {
				// Same-size frames: frame 1 copied over frame 2 is valid by CRC, but its seq goes back.
				copy(b[s.offs[2]:s.offs[3]], b[s.offs[1]:s.offs[2]])
				return b
			})
			return s.seqs[2:3]
		}, 1, 1},
		{"garbage over two middle records", func(t *testing.T, segs []segFrames) []uint64 {
			s := segs[3]
			modify(t, s.path, func(b []byte) []byte {
				copy(b[s.offs[1]:s.offs[3]], garbage(int(s.offs[3]-s.offs[1])))
				return b
			})
			return s.seqs[1:3]
		}, 1, 1},
		{"truncated sealed segment", func(t *testing.T, segs []segFrames) []uint64 {
			s := segs[0]
			modify(t, s.path, func(b []byte) []byte { return b[:len(b)-7] })
			return s.seqs[4:]
		}, 1, 1},
		{"zero-filled sealed segment", func(t *testing.T, segs []segFrames) []uint64 {
			s := segs[1]
			modify(t, s.path, func(b []byte) []byte { clear(b); return b })
			return s.seqs
		}, 1, 1},
		{"damage in the middle and a torn tail in the last segment", func(t *testing.T, segs []segFrames) []uint64 {
			s := segs[len(segs)-1]
			modify(t, s.path, func(b []byte) []byte {
				b[s.offs[1]+frameHeaderSize] ^= 0xFF
				return b[:s.offs[4]+20]
			})
			return []uint64{s.seqs[1], s.seqs[4]}
		}, 2, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			want := buildSpool(t, dir)
			segs := listFrames(t, dir)
			if len(segs) != 6 {
				t.Fatalf("%d segments, want 6", len(segs))
			}
			for _, s := range tc.damage(t, segs) {
				delete(want, s)
			}

			// Scan sees the same thing and changes nothing.
			before := dirHash(t, dir)
			scanned := map[uint64][]byte{}
			st, err := Scan(dir, true, func(e Entry) error {
				scanned[e.Seq] = slices.Clone(e.Data)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if st.Corrupt != tc.corrupt || len(scanned) != len(want) {
				t.Fatalf("Scan: %+v, %d entries; want %d corrupt, %d entries", st, len(scanned), tc.corrupt, len(want))
			}
			for s, d := range want {
				if !bytes.Equal(scanned[s], d) {
					t.Fatalf("Scan: seq %d = %q, want %q", s, scanned[s], d)
				}
			}
			if dirHash(t, dir) != before {
				t.Fatal("Scan modified the spool")
			}

			d := openT(t, dir, Options{SegmentBytes: 600})
			if st := d.Stats(); st.Corrupt != tc.corrupt || st.Depth != int64(len(want)) {
				t.Fatalf("first open: %+v; want corrupt %d, depth %d", st, tc.corrupt, len(want))
			}
			checkEntries(t, readN(t, d, len(want)), want)
			readNone(t, d)
			// It keeps working: new entries get higher seqs than anything before.
			var maxSeq uint64
			for s := range want {
				maxSeq = max(maxSeq, s)
			}
			r := appendWait(t, d, []byte("after recovery"))
			if r.err != nil || r.seq <= maxSeq || r.seq <= segs[len(segs)-1].seqs[4] {
				t.Fatalf("append after recovery: %+v, want seq > %d", r, segs[len(segs)-1].seqs[4])
			}
			want[r.seq] = []byte("after recovery")
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}

			d = openT(t, dir, Options{SegmentBytes: 600})
			if st := d.Stats(); st.Corrupt != tc.corruptReopen {
				t.Fatalf("second open: corrupt %d, want %d", st.Corrupt, tc.corruptReopen)
			}
			checkEntries(t, readN(t, d, len(want)), want)
			readNone(t, d)
		})
	}
}

// TestCorruptCursor: a damaged cursor file makes Open redeliver what is on disk (at-least-once)
// instead of failing, and sequence numbers still move forward.
func TestCorruptCursor(t *testing.T) {
	dir := t.TempDir()
	want := buildSpool(t, dir)
	d := openT(t, dir, Options{SegmentBytes: 600})
	es := readN(t, d, len(want))
	if err := d.Commit(es[12].Seq); err != nil {
		t.Fatal(err)
	}
	d.Close()
	modify(t, filepath.Join(dir, cursorFile), func(b []byte) []byte { b[10] ^= 1; return b })

	d = openT(t, dir, Options{SegmentBytes: 600})
	st := d.Stats()
	if st.Corrupt != 1 || st.CommittedSeq != 0 {
		t.Fatalf("Stats = %+v; want corrupt 1, cursor 0", st)
	}
	// Segments wholly delivered were deleted by the Commit; the rest comes again.
	got := readN(t, d, int(st.Depth))
	if len(got) < len(want)-13 || got[len(got)-1].Seq != es[len(es)-1].Seq {
		t.Fatalf("redelivered %d entries ending at %d; want at least %d ending at %d",
			len(got), got[len(got)-1].Seq, len(want)-13, es[len(es)-1].Seq)
	}
	if r := appendWait(t, d, []byte("x")); r.err != nil || r.seq <= es[len(es)-1].Seq {
		t.Fatalf("append = %+v", r)
	}
}

// TestDecodeNoAllocation: an absurd length field costs no allocation in the decoder.
func TestDecodeNoAllocation(t *testing.T) {
	var seg []byte
	for i := range 10 {
		seg = appendFrame(seg, uint64(i+1), []byte("payload"), dataCRC([]byte("payload")))
	}
	binary.LittleEndian.PutUint32(seg[4:], 0xFFFFFFF0)
	allocs := testing.AllocsPerRun(10, func() {
		dec := decodeSegment(seg, 1, 0, nil)
		if dec.frames != 9 {
			t.Fatalf("decoded %d frames, want 9", dec.frames)
		}
	})
	if allocs > 1 { // the one corrupt span
		t.Fatalf("%v allocations per decode", allocs)
	}
}

// TestCorruptionFoundWhileReading: damage that appears after Open (bit rot under a running spool) is
// skipped by Next, counted and logged, and the entries after it are still delivered.
func TestCorruptionFoundWhileReading(t *testing.T) {
	dir := t.TempDir()
	d := openT(t, dir, Options{})
	datas := entries("rot", 10, 100)
	seqs := okSeqs(t, appendAll(t, d, datas))
	segs := listFrames(t, dir)
	f, err := os.OpenFile(segs[0].path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a data bit of the fourth entry and the length of the seventh.
	if _, err := f.WriteAt([]byte{datas[3][50] ^ 0x20}, segs[0].offs[3]+frameHeaderSize+50); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xFF}, segs[0].offs[6]+6); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want := seqMap(seqs, datas)
	delete(want, seqs[3])
	delete(want, seqs[6])
	checkEntries(t, readN(t, d, 8), want)
	readNone(t, d)
	if st := d.Stats(); st.Corrupt != 2 || st.Depth != 8 {
		t.Fatalf("Stats = %+v, want 2 corrupt, depth 8", st)
	}
	if err := d.Commit(seqs[9]); err != nil {
		t.Fatal(err)
	}
	if st := d.Stats(); st.Depth != 0 {
		t.Fatalf("Depth = %d after committing everything", st.Depth)
	}
}
