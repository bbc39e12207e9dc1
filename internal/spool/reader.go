package spool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// readChunk is how much the reader reads from a segment at a time.
const readChunk = 256 << 10

// reader is the consumer's position: the next frame to look at is at offset off of segment seg.
// It reads segment files (durable bytes only), through a buffer, so it works the same for entries
// written a millisecond ago and for entries found on disk at Open.
type reader struct {
	seg    uint64 // first sequence number of the current segment; 0 = before every segment
	off    int64
	last   uint64 // sequence number of the last frame consumed (or the cursor at open)
	closed bool

	f      *os.File // open on segment fseg
	fseg   uint64
	buf    []byte // bytes of fseg at [bufOff, bufOff+len(buf)), all durable
	bufOff int64
}

func (r *reader) closeFile() {
	if r.f != nil {
		r.f.Close()
	}
	r.f, r.fseg, r.buf = nil, 0, r.buf[:0]
}

// fill returns the durable bytes of segment first from off on, at least min(need, size-off) of them.
func (r *reader) fill(dir string, first uint64, off int64, need int, size int64) ([]byte, error) {
	end := min(off+int64(need), size)
	if r.f != nil && r.fseg == first && off >= r.bufOff && end <= r.bufOff+int64(len(r.buf)) {
		return r.buf[off-r.bufOff:], nil
	}
	if r.f == nil || r.fseg != first {
		r.closeFile()
		f, err := os.Open(segmentPath(dir, first))
		if err != nil {
			return nil, fmt.Errorf("read segment %d: %w", first, err)
		}
		r.f, r.fseg = f, first
	}
	n := min(max(end-off, readChunk), size-off)
	if int64(cap(r.buf)) < n {
		r.buf = make([]byte, n)
	}
	r.buf = r.buf[:n]
	r.bufOff = off
	if _, err := r.f.ReadAt(r.buf, off); err != nil {
		r.buf = r.buf[:0]
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read segment %d at %d: %w", first, off, err)
	}
	return r.buf, nil
}

// frameRef is a durable frame found by peek; data aliases the reader's buffer.
type frameRef struct {
	seq  uint64
	data []byte
	n    int64
}

// peekLocked returns the next durable frame without consuming it; ok is false when there is none
// (yet). It skips corrupt regions: the ones found at Open silently, new ones (damage since Open)
// by resynchronising, counting and logging them. readMu is held.
func (d *Disk) peekLocked() (frameRef, bool, error) {
	r := &d.rd
	for {
		d.stateMu.Lock()
		i, found := d.segIndexLocked(r.seg)
		if i == len(d.segs) {
			d.stateMu.Unlock()
			return frameRef{}, false, nil
		}
		s := d.segs[i]
		if !found { // r.seg was deleted (all delivered) or not created yet
			r.seg, r.off = s.first, 0
		}
		size, skips := s.size, s.skips
		var next uint64
		if i+1 < len(d.segs) {
			next = d.segs[i+1].first
		}
		d.stateMu.Unlock()

		if r.off >= size {
			if next == 0 {
				// The end of what is durable: everything has been consumed, except what corruption
				// found since Open destroyed; drop that from the count.
				d.stateMu.Lock()
				if r.off >= s.size && d.unread != 0 {
					d.unread = 0
					d.m.depth.Set(float64(d.depthLocked()))
				}
				d.stateMu.Unlock()
				return frameRef{}, false, nil // the active segment: wait for more
			}
			r.seg, r.off = next, 0 // a sealed segment never grows again
			continue
		}
		sb := bounds(s.first, r.last, next)
		b, err := r.fill(d.dir, s.first, r.off, frameHeaderSize, size)
		if err != nil {
			return frameRef{}, false, err
		}
		if l := frameLen(b); l > len(b) && int64(l) <= size-r.off {
			if b, err = r.fill(d.dir, s.first, r.off, l, size); err != nil {
				return frameRef{}, false, err
			}
		}
		b = b[:min(int64(len(b)), size-r.off)]
		if seq, data, n, ok := parseFrame(b, sb); ok {
			return frameRef{seq, data, int64(n)}, true, nil
		}
		if end, ok := skips[r.off]; ok {
			r.off = end
			continue
		}
		end, err := d.resyncAt(s.first, r.off, size, sb)
		if err != nil {
			return frameRef{}, false, err
		}
		d.log.Warn("skipping corrupt region", "segment", s.first, "offset", r.off, "bytes", end-r.off)
		d.noteCorrupt()
		r.off = end
	}
}

// frameLen is the total size the frame header at the start of b claims, or 0 if it is not even
// plausible.
func frameLen(b []byte) int {
	if len(b) < frameHeaderSize {
		return 0
	}
	l := uint32(b[4]) | uint32(b[5])<<8 | uint32(b[6])<<16 | uint32(b[7])<<24
	if l > maxFrameData {
		return 0
	}
	return frameHeaderSize + int(l)
}

// resyncAt finds the offset of the next valid frame after a corrupt one at off, or size.
func (d *Disk) resyncAt(first uint64, off, size int64, sb seqBounds) (int64, error) {
	f, err := os.Open(segmentPath(d.dir, first))
	if err != nil {
		return 0, fmt.Errorf("read segment %d: %w", first, err)
	}
	defer f.Close()
	rest := make([]byte, size-off)
	if _, err := f.ReadAt(rest, off); err != nil {
		return 0, fmt.Errorf("read segment %d at %d: %w", first, off, err)
	}
	if p := resync(rest, 1, sb); p >= 0 {
		return off + int64(p), nil
	}
	return size, nil
}

// segIndexLocked returns the index of the segment named first and true, or the index of the first
// segment after it and false (len(d.segs) if none). stateMu is held.
func (d *Disk) segIndexLocked(first uint64) (int, bool) {
	return slices.BinarySearchFunc(d.segs, first, func(s *segment, first uint64) int {
		return cmp.Compare(s.first, first)
	})
}

// consumeLocked moves the reader past f and counts it as taken by the consumer. readMu is held.
func (d *Disk) consumeLocked(f frameRef) {
	d.rd.off += f.n
	d.rd.last = f.seq
	d.stateMu.Lock()
	d.unread = max(d.unread-1, 0)
	d.taken.add(f.seq)
	d.stateMu.Unlock()
}

// Next returns up to max durable entries after the last one it returned, waiting for one if there is
// none. See Log.
func (d *Disk) Next(ctx context.Context, max int) ([]Entry, error) {
	max = clampMax(max)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d.stateMu.Lock()
		ch := d.notify // taken before looking, so an entry made durable meanwhile wakes us
		d.stateMu.Unlock()
		es, err := d.read(max)
		if err != nil || len(es) > 0 {
			return es, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-d.quit:
			return nil, ErrClosed
		case <-ch:
		}
	}
}

func clampMax(max int) int {
	if max < 1 {
		return 1
	}
	return max
}

// read returns what is available now, without waiting.
func (d *Disk) read(max int) ([]Entry, error) {
	d.readMu.Lock()
	defer d.readMu.Unlock()
	if d.rd.closed {
		return nil, ErrClosed
	}
	var (
		slab []byte
		seqs []uint64
		ends []int
		err  error
	)
	for len(seqs) < max {
		var f frameRef
		var ok bool
		f, ok, err = d.peekLocked()
		if err != nil || !ok {
			break
		}
		d.consumeLocked(f)
		slab = append(slab, f.data...)
		seqs = append(seqs, f.seq)
		ends = append(ends, len(slab))
	}
	if len(seqs) == 0 {
		if err != nil {
			err = fmt.Errorf("spool: next: %w", err)
		}
		return nil, err
	}
	if err != nil {
		// Return what was read; the error comes back on the next call.
		d.log.Warn("spool read failed", "err", err)
	}
	es := make([]Entry, len(seqs))
	start := 0
	for i, seq := range seqs {
		es[i] = Entry{Seq: seq, Data: slab[start:ends[i]:ends[i]]}
		start = ends[i]
	}
	return es, nil
}

// Commit records that every entry with Seq <= seq is delivered: it persists the cursor atomically and
// deletes the segments that hold nothing newer. Entries not yet returned by Next are skipped.
func (d *Disk) Commit(seq uint64) error {
	d.readMu.Lock()
	defer d.readMu.Unlock()
	if d.rd.closed {
		return ErrClosed
	}
	d.stateMu.Lock()
	cur, high := d.cursor, d.lastDurable
	d.stateMu.Unlock()
	if seq <= cur {
		return nil
	}
	if seq > high {
		return fmt.Errorf("spool: commit %d: beyond the last durable entry %d", seq, high)
	}
	// Delivered without having been read through Next: move the reader past them.
	for d.rd.last < seq {
		f, ok, err := d.peekLocked()
		if err != nil {
			return fmt.Errorf("spool: commit %d: %w", seq, err)
		}
		if !ok || f.seq > seq {
			break
		}
		d.consumeLocked(f)
	}

	d.cursorMu.Lock()
	if err := writeCursor(d.fs, d.dir, cursorState{committed: seq, floor: d.floor}, d.opts.NoSync); err != nil {
		d.cursorMu.Unlock()
		return fmt.Errorf("spool: commit %d: %w: %w", seq, ErrUnavailable, err)
	}
	d.stateMu.Lock()
	d.cursor = seq
	d.taken.commit(seq)
	depth := d.depthLocked()
	d.stateMu.Unlock()
	d.cursorMu.Unlock()
	d.m.depth.Set(float64(depth))
	d.deleteDelivered(seq)
	return nil
}

// deleteDelivered removes the sealed segments whose whole range of sequence numbers is at or below
// seq (so a segment that is corrupt or empty goes only once the cursor has passed it). The segment
// being written is removed too once everything in it is delivered and it has reached the roll size,
// so that a spool whose cap is all in one delivered segment can accept appends again. readMu is held.
func (d *Disk) deleteDelivered(seq uint64) {
	var victims []uint64
	d.stateMu.Lock()
	for i, s := range d.segs {
		// Every sequence number a sealed segment can hold is below the next segment's first.
		if i == len(d.segs)-1 || d.segs[i+1].first > seq+1 {
			break
		}
		victims = append(victims, s.first)
	}
	d.stateMu.Unlock()
	for _, first := range victims {
		d.removeSegment(first)
	}

	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.stateMu.Lock()
	n := len(d.segs)
	if n == 0 || d.active == nil || d.segs[n-1].first != d.activeFirst ||
		d.segs[n-1].last > seq || d.activeSize < d.segLimit {
		d.stateMu.Unlock()
		return
	}
	d.stateMu.Unlock()
	if err := d.active.Close(); err != nil {
		d.log.Warn("close segment", "segment", d.activeFirst, "err", err)
	}
	d.active, d.dirty = nil, false
	d.removeSegment(d.activeFirst)
}

// removeSegment deletes a delivered segment file and forgets it. A failure is logged and the segment
// kept; the next Commit (or Open) tries again.
func (d *Disk) removeSegment(first uint64) {
	if err := d.fs.Remove(segmentPath(d.dir, first)); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("delete delivered segment", "segment", first, "err", err)
		return
	}
	if d.rd.fseg == first {
		d.rd.closeFile()
	}
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	for i, s := range d.segs {
		if s.first == first {
			d.segs = append(d.segs[:i], d.segs[i+1:]...)
			d.diskBytes.Add(-s.size)
			break
		}
	}
	d.m.size.Set(float64(d.diskBytes.Load()))
}
