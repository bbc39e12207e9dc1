package spool

import (
	"encoding/binary"
	"hash/crc32"
	"math"
)

// Frame layout, little endian:
//
//	[0:4]   CRC32C (Castagnoli) of data followed by bytes [4:16]
//	[4:8]   len(data)
//	[8:16]  sequence number
//	[16:]   data
//
// The CRC covers the data first so Append can checksum the data outside its lock and fold the header
// in once the sequence number is known. A frame is valid only if the CRC matches, the length is at most
// maxFrameData and fits in what is left of the segment, and the sequence number lies in the range the
// caller expects (above the previous frame's, below the next segment's first, and less than
// maxSeqJump above the lower bound). A zero-filled region is never valid: sequence number 0 is never
// used.
const (
	frameHeaderSize = 16
	maxFrameData    = 16 << 20
	// maxSeqJump bounds the gap between consecutive valid frames. Real gaps (failed batches) are tiny
	// compared with it; the bound makes it cheap to reject garbage while resynchronising.
	maxSeqJump = 1 << 32
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var zeroHeader [frameHeaderSize]byte

// dataCRC is the first half of a frame's checksum, computed without knowing the sequence number.
func dataCRC(data []byte) uint32 { return crc32.Checksum(data, castagnoli) }

// appendFrame appends the frame for (seq, data) to dst; crc must be dataCRC(data).
func appendFrame(dst []byte, seq uint64, data []byte, crc uint32) []byte {
	off := len(dst)
	dst = append(dst, zeroHeader[:]...)
	h := dst[off : off+frameHeaderSize]
	binary.LittleEndian.PutUint32(h[4:8], uint32(len(data)))
	binary.LittleEndian.PutUint64(h[8:16], seq)
	binary.LittleEndian.PutUint32(h[0:4], crc32.Update(crc, castagnoli, h[4:16]))
	return append(dst, data...)
}

// seqBounds is the range [lo, hi) a frame's sequence number must fall in.
type seqBounds struct{ lo, hi uint64 }

// bounds returns the range for a frame in a segment named first, after a frame with sequence number
// prev (0 if none), before a segment named next (0 if none).
func bounds(first, prev, next uint64) seqBounds {
	lo := max(first, prev+1, 1)
	hi := uint64(math.MaxUint64)
	if next != 0 {
		hi = next
	}
	if lo <= math.MaxUint64-maxSeqJump {
		hi = min(hi, lo+maxSeqJump)
	}
	return seqBounds{lo, hi}
}

func (sb seqBounds) ok(seq uint64) bool { return seq >= sb.lo && seq < sb.hi }

// parseFrame decodes the frame at the start of b. n is the frame's total size. data aliases b.
func parseFrame(b []byte, sb seqBounds) (seq uint64, data []byte, n int, ok bool) {
	if len(b) < frameHeaderSize {
		return 0, nil, 0, false
	}
	length := binary.LittleEndian.Uint32(b[4:8])
	seq = binary.LittleEndian.Uint64(b[8:16])
	if length > maxFrameData || !sb.ok(seq) || uint64(len(b)-frameHeaderSize) < uint64(length) {
		return 0, nil, 0, false
	}
	data = b[frameHeaderSize : frameHeaderSize+int(length)]
	crc := crc32.Update(crc32.Checksum(data, castagnoli), castagnoli, b[4:16])
	if crc != binary.LittleEndian.Uint32(b[0:4]) {
		return 0, nil, 0, false
	}
	return seq, data, frameHeaderSize + int(length), true
}

// resync returns the offset of the first valid frame in b at or after from, or -1. It checks the
// cheap fields first so that scanning garbage costs a few nanoseconds per byte.
//
// Resynchronising byte by byte recovers every intact frame after a damaged one. Its limit: if the
// damage is followed by an entry whose data itself contains a well-formed frame with a plausible
// sequence number, that inner frame is found first (its CRC is valid by construction). Entry data is
// device-controlled, so this needs both disk corruption and a crafted payload at that spot; the
// sequence-number bounds make a false match otherwise vanishingly unlikely.
func resync(b []byte, from int, sb seqBounds) int {
	for p := from; p+frameHeaderSize <= len(b); p++ {
		if !sb.ok(binary.LittleEndian.Uint64(b[p+8:])) {
			continue
		}
		if l := binary.LittleEndian.Uint32(b[p+4:]); l > maxFrameData || int64(l) > int64(len(b)-p-frameHeaderSize) {
			continue
		}
		if _, _, _, ok := parseFrame(b[p:], sb); ok {
			return p
		}
	}
	return -1
}

// span is a byte range [start, end) of a segment.
type span struct{ start, end int64 }

// decoded is what decodeSegment found in one segment's bytes. Valid frames and corrupt spans
// alternate and together cover the input exactly.
type decoded struct {
	frames  int
	last    uint64 // sequence number of the last valid frame, 0 if none
	end     int64  // offset just past the last valid frame
	corrupt []span // invalid regions, in order; a region reaching len(b) is the tail
}

// tail returns the corrupt region at the end of the segment, if any.
func (d *decoded) tail(size int64) (span, bool) {
	if n := len(d.corrupt); n > 0 && d.corrupt[n-1].end == size {
		return d.corrupt[n-1], true
	}
	return span{}, false
}

// decodeSegment decodes the frames of a segment named first whose successor is named next (0 if it
// is the last), calling fn for each valid frame with its offset. On an invalid frame it resyncs to
// the next valid one (see resync); what it skips is reported in decoded.corrupt. data passed to fn
// aliases b. decodeSegment never allocates in proportion to anything a frame claims.
func decodeSegment(b []byte, first, next uint64, fn func(seq uint64, data []byte, off int64)) decoded {
	var d decoded
	off := 0
	for off < len(b) {
		sb := bounds(first, d.last, next)
		seq, data, n, ok := parseFrame(b[off:], sb)
		if ok {
			if fn != nil {
				fn(seq, data, int64(off))
			}
			d.frames++
			d.last = seq
			off += n
			d.end = int64(off)
			continue
		}
		p := resync(b, off+1, sb)
		if p < 0 {
			d.corrupt = append(d.corrupt, span{int64(off), int64(len(b))})
			break
		}
		d.corrupt = append(d.corrupt, span{int64(off), int64(p)})
		off = p
	}
	return d
}
