package spool

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	for _, data := range [][]byte{nil, {0}, []byte("hello"), bytes.Repeat([]byte{0xAB}, 70000)} {
		b := appendFrame([]byte("prefix"), 42, data, dataCRC(data))[len("prefix"):]
		seq, got, n, ok := parseFrame(b, bounds(1, 0, 0))
		if !ok || seq != 42 || !bytes.Equal(got, data) || n != len(b) {
			t.Fatalf("parseFrame(%d bytes) = %d, %d bytes, %d, %v", len(data), seq, len(got), n, ok)
		}
		for _, sb := range []seqBounds{bounds(43, 0, 0), bounds(1, 0, 42), bounds(1, 42, 0)} {
			if _, _, _, ok := parseFrame(b, sb); ok {
				t.Fatalf("seq 42 accepted with bounds %+v", sb)
			}
		}
		if _, _, _, ok := parseFrame(b[:len(b)-1], bounds(1, 0, 0)); ok {
			t.Fatal("truncated frame accepted")
		}
		for i := range min(len(b), 64) {
			c := bytes.Clone(b)
			c[i] ^= 0x80
			if _, _, _, ok := parseFrame(c, bounds(1, 0, 0)); ok {
				t.Fatalf("frame with byte %d flipped accepted", i)
			}
		}
	}
	if _, _, _, ok := parseFrame(make([]byte, 64), bounds(1, 0, 0)); ok {
		t.Fatal("zeros accepted as a frame")
	}
}

// segmentSeeds are valid segments and the damage crashes and bad disks do to them.
func segmentSeeds() [][]byte {
	var valid []byte
	for i, d := range []string{"first", "", "third record", "4"} {
		valid = appendFrame(valid, uint64(i*2+1), []byte(d), dataCRC([]byte(d)))
	}
	mut := func(fn func([]byte) []byte) []byte { return fn(bytes.Clone(valid)) }
	return [][]byte{
		nil,
		valid,
		mut(func(b []byte) []byte { return b[:len(b)-3] }),                                        // torn tail
		mut(func(b []byte) []byte { return b[:len(b)-18] }),                                       // torn header
		mut(func(b []byte) []byte { clear(b[25:29]); return b }),                                  // zeroed length
		mut(func(b []byte) []byte { b[21] ^= 1; return b }),                                       // flipped CRC bit
		mut(func(b []byte) []byte { b[40] ^= 4; return b }),                                       // flipped data bit
		mut(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[4:], ^uint32(0)); return b }), // absurd length
		mut(func(b []byte) []byte { return append(b, make([]byte, 100)...) }),                     // zero tail
		mut(func(b []byte) []byte { return append(b, "garbage after the last frame"...) }),
		mut(func(b []byte) []byte { return append(b[:30], b...) }), // duplicated prefix
		make([]byte, 4096),
	}
}

// FuzzSegmentDecode checks the decoder's invariants on arbitrary bytes: no panic, valid frames and
// corrupt spans alternate and cover the input exactly, sequence numbers increase within bounds, each
// reported frame re-encodes to the bytes it was read from, and re-encoding the decoded entries gives
// a segment that decodes to the same entries with no corruption.
func FuzzSegmentDecode(f *testing.F) {
	for _, s := range segmentSeeds() {
		f.Add(s, uint64(1))
	}
	f.Fuzz(func(t *testing.T, b []byte, first uint64) {
		if first == 0 {
			first = 1
		}
		type ent struct {
			seq  uint64
			data []byte
			off  int64
		}
		var got []ent
		dec := decodeSegment(b, first, 0, func(seq uint64, data []byte, off int64) {
			got = append(got, ent{seq, data, off})
		})
		var pos int64
		ci := 0
		for i, e := range got {
			for ci < len(dec.corrupt) && dec.corrupt[ci].start == pos {
				if dec.corrupt[ci].end <= pos {
					t.Fatalf("empty corrupt span %+v", dec.corrupt[ci])
				}
				pos = dec.corrupt[ci].end
				ci++
			}
			if e.off != pos {
				t.Fatalf("frame %d at %d, want %d (spans %+v)", i, e.off, pos, dec.corrupt)
			}
			if e.seq < first || (i > 0 && e.seq <= got[i-1].seq) {
				t.Fatalf("frame %d: seq %d (first %d)", i, e.seq, first)
			}
			frame := appendFrame(nil, e.seq, e.data, dataCRC(e.data))
			if !bytes.Equal(frame, b[e.off:e.off+int64(len(frame))]) {
				t.Fatalf("frame %d does not re-encode to its bytes", i)
			}
			pos += int64(len(frame))
		}
		for ; ci < len(dec.corrupt); ci++ {
			if dec.corrupt[ci].start != pos || dec.corrupt[ci].end <= pos {
				t.Fatalf("corrupt span %+v at %d", dec.corrupt[ci], pos)
			}
			pos = dec.corrupt[ci].end
		}
		if pos != int64(len(b)) || dec.frames != len(got) {
			t.Fatalf("decoded up to %d of %d bytes, %d frames reported, %d seen", pos, len(b), dec.frames, len(got))
		}

		var clean []byte
		for _, e := range got {
			clean = appendFrame(clean, e.seq, e.data, dataCRC(e.data))
		}
		i := 0
		dec2 := decodeSegment(clean, first, 0, func(seq uint64, data []byte, _ int64) {
			if seq != got[i].seq || !bytes.Equal(data, got[i].data) {
				t.Fatalf("re-encoded entry %d differs", i)
			}
			i++
		})
		if len(dec2.corrupt) != 0 || i != len(got) {
			t.Fatalf("re-encoded segment: %d of %d entries, corrupt %+v", i, len(got), dec2.corrupt)
		}
	})
}

// FuzzCursorDecode: the cursor decoder never panics and accepts only what encodeCursor produces.
func FuzzCursorDecode(f *testing.F) {
	f.Add(encodeCursor(cursorState{committed: 7, floor: 1 << 20}))
	f.Add([]byte("SPCR"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeCursor(b)
		if err == nil && !bytes.Equal(encodeCursor(c), b) {
			t.Fatalf("accepted %x, which does not re-encode", b)
		}
	})
}
