package spool

import (
	"fmt"
	"os"
	"time"
)

// Append copies data into the queue of the next group commit and returns without I/O. See Log.
func (d *Disk) Append(data []byte, done func(seq uint64, err error)) error {
	if len(data) > maxFrameData {
		return ErrTooLarge
	}
	crc := dataCRC(data) // outside the lock
	n := int64(frameHeaderSize + len(data))
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	if d.diskBytes.Load()+d.queued+n > d.opts.MaxBytes {
		d.mu.Unlock()
		return ErrFull
	}
	seq := d.nextSeq
	d.nextSeq++
	last := len(d.chunks) - 1
	if last < 0 || int64(cap(d.chunks[last])-len(d.chunks[last])) < n {
		d.chunks = append(d.chunks, d.newChunkLocked(int(n)))
		d.counts = append(d.counts, 0)
		last++
	}
	d.chunks[last] = appendFrame(d.chunks[last], seq, data, crc)
	d.counts[last]++
	d.cbs = append(d.cbs, callback{seq, done})
	d.queued += n
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return nil
}

// run is the commit goroutine.
func (d *Disk) run() {
	defer close(d.done)
	for {
		select {
		case <-d.wake:
			d.flush()
		case <-d.quit:
			// Close has set closed: nothing is appended after this flush.
			d.flush()
			return
		}
	}
}

// newChunkLocked returns an empty chunk with room for n bytes. mu is held.
func (d *Disk) newChunkLocked(n int) []byte {
	if n <= chunkSize && len(d.free) > 0 {
		c := d.free[len(d.free)-1]
		d.free = d.free[:len(d.free)-1]
		return c
	}
	return make([]byte, 0, max(n, chunkSize))
}

// flush writes and fsyncs everything queued and calls the callbacks. Normally that is one batch (one
// fsync); a backlog larger than a segment is cut, at chunk boundaries, into batches of at most a
// segment each, so no segment grows far beyond SegmentBytes and each batch succeeds or fails whole.
func (d *Disk) flush() {
	d.mu.Lock()
	chunks, counts, cbs := d.chunks, d.counts, d.cbs
	d.chunks, d.counts, d.cbs = d.spareChunks[:0], d.spareCounts[:0], d.spareCBs[:0]
	d.mu.Unlock()
	for ci, cbi := 0, 0; ci < len(chunks); {
		cj, size, n := ci, int64(0), 0
		for cj < len(chunks) && (cj == ci || size+int64(len(chunks[cj])) <= d.segLimit) {
			size += int64(len(chunks[cj]))
			n += counts[cj]
			cj++
		}
		batch := cbs[cbi : cbi+n]
		err := d.writeBatch(chunks[ci:cj], size, batch[0].seq, batch[n-1].seq, n)
		d.mu.Lock()
		d.queued -= size
		for _, c := range chunks[ci:cj] {
			if cap(c) == chunkSize && len(d.free) < maxFreeChunks {
				d.free = append(d.free, c[:0])
			}
		}
		d.mu.Unlock()
		if err != nil && d.flushErr == nil && d.isClosing() {
			d.flushErr = err
		}
		for _, cb := range batch {
			if cb.fn != nil {
				cb.fn(cb.seq, err)
			}
		}
		ci, cbi = cj, cbi+n
	}
	clear(cbs)
	clear(chunks)
	d.spareChunks, d.spareCounts, d.spareCBs = chunks[:0], counts[:0], cbs[:0]
}

func (d *Disk) isClosing() bool {
	select {
	case <-d.quit:
		return true
	default:
		return false
	}
}

// writeBatch appends chunks (size bytes: the frames of sequence numbers first..last, n entries) to the
// active segment and fsyncs it once. On success the entries become visible to Next. On failure nothing of the
// batch is visible, now or after a restart: the segment is truncated back before the next write.
func (d *Disk) writeBatch(chunks [][]byte, size int64, first, last uint64, n int) error {
	err := d.extendLease(last)
	if err == nil {
		d.wmu.Lock()
		err = d.writeLocked(chunks, size, first)
		if err != nil {
			if rerr := d.repairLocked(); rerr != nil {
				d.log.Debug("repair after failed write", "err", rerr) // retried before the next batch
			}
			d.wmu.Unlock()
		}
	}
	if err != nil {
		d.m.writeErrors.Inc()
		if !d.failing {
			d.log.Error("spool write failed; failing appends until the disk recovers", "err", err)
		}
		d.failing = true
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	d.stateMu.Lock()
	s := d.segs[len(d.segs)-1]
	s.size = d.activeSize
	s.last = last
	d.lastDurable = last
	d.unread += int64(n)
	depth := d.depthLocked()
	d.diskBytes.Add(size)
	close(d.notify)
	d.notify = make(chan struct{})
	d.stateMu.Unlock()
	d.wmu.Unlock()

	if d.failing {
		d.failing = false
		d.log.Info("spool writes recovered")
	}
	d.m.appendedRecords.Add(float64(n))
	d.m.appendedBytes.Add(float64(size - int64(n*frameHeaderSize)))
	d.m.batch.Observe(float64(n))
	d.m.depth.Set(float64(depth))
	d.m.size.Set(float64(d.diskBytes.Load()))
	return nil
}

// extendLease makes sure the persisted floor is above last before frames up to last are written,
// extending it early (at half the lease) so that a brief failure to write the cursor does not fail
// batches.
func (d *Disk) extendLease(last uint64) error {
	d.cursorMu.Lock()
	defer d.cursorMu.Unlock()
	if last < d.floor-min(d.floor, seqLease/2) {
		return nil
	}
	d.stateMu.Lock()
	c := cursorState{committed: d.cursor, floor: max(last+1+seqLease, d.floor)} // never below a RaiseSeq
	d.stateMu.Unlock()
	if err := writeCursor(d.fs, d.dir, c, d.opts.NoSync); err != nil {
		if last < d.floor {
			d.log.Warn("extend sequence lease", "err", err)
			return nil
		}
		return fmt.Errorf("extend sequence lease: %w", err)
	}
	d.floor = c.floor
	return nil
}

// writeLocked writes and syncs chunks at the end of the active segment, first repairing it after an
// earlier failure and rolling to a new segment if needed. wmu is held.
func (d *Disk) writeLocked(chunks [][]byte, size int64, first uint64) error {
	if err := d.repairLocked(); err != nil {
		return err
	}
	if d.active == nil || d.raised || (d.activeSize > 0 && d.activeSize+size > d.segLimit) {
		if err := d.rollLocked(first); err != nil {
			return err
		}
	}
	off := d.activeSize
	for _, c := range chunks {
		if _, err := d.active.WriteAt(c, off); err != nil {
			d.dirty = true
			return fmt.Errorf("write segment %d: %w", d.activeFirst, err)
		}
		off += int64(len(c))
	}
	if err := d.sync(d.active); err != nil {
		d.dirty = true
		return fmt.Errorf("sync segment %d: %w", d.activeFirst, err)
	}
	d.activeSize = off
	return nil
}

// repairLocked removes what a failed batch left past the durable size of the active segment. It runs
// right after the failure, again before the next batch if it failed, and on Close: until it succeeds
// nothing else is written, since a restart would find those bytes and deliver entries that were
// reported as failed. wmu is held.
func (d *Disk) repairLocked() error {
	if d.active == nil || !d.dirty {
		return nil
	}
	if err := d.active.Truncate(d.activeSize); err != nil {
		return fmt.Errorf("truncate segment %d after failed write: %w", d.activeFirst, err)
	}
	if err := d.sync(d.active); err != nil {
		return fmt.Errorf("sync segment %d after truncation: %w", d.activeFirst, err)
	}
	d.dirty = false
	return nil
}

// sync fsyncs a batch (unless NoSync) and records its duration.
func (d *Disk) sync(f file) error {
	if d.opts.NoSync {
		return nil
	}
	start := time.Now()
	err := f.Sync()
	d.m.fsync.Observe(time.Since(start).Seconds())
	d.syncs.Add(1)
	return err
}

// rollLocked starts a new segment named first and makes it the active one. wmu is held.
func (d *Disk) rollLocked(first uint64) error {
	path := segmentPath(d.dir, first)
	f, err := d.fs.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("create segment %d: %w", first, err)
	}
	if !d.opts.NoSync {
		// The new file's directory entry must be durable before anything in it is reported durable.
		if err := d.fs.SyncDir(d.dir); err != nil {
			f.Close()
			d.fs.Remove(path)
			return fmt.Errorf("create segment %d: sync dir: %w", first, err)
		}
	}
	if d.active != nil {
		// Everything in it is already fsync'd; a close error loses nothing.
		if err := d.active.Close(); err != nil {
			d.log.Warn("close segment", "segment", d.activeFirst, "err", err)
		}
	}
	d.active, d.activeFirst, d.activeSize, d.dirty, d.raised = f, first, 0, false, false
	d.stateMu.Lock()
	d.segs = append(d.segs, &segment{first: first})
	d.stateMu.Unlock()
	return nil
}
