package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// seqLease is how many sequence numbers the spool reserves at a time in the cursor file (floor).
// Every sequence number written to a segment is below the persisted floor, so a restart never reuses
// one, even if the entry holding it was destroyed (torn tail, lost segment): the restarted spool
// starts at the floor. Each restart leaves a gap of up to seqLease; gaps are harmless.
const seqLease = 1 << 20

// Disk is the durable Log: segment files in a directory, group-committed with fsync.
//
// Locks, in the order they may be taken: readMu (the consumer side: Next, Commit), cursorMu (the
// cursor file), wmu (the writer's file, held for the duration of one batch), stateMu (segment list,
// cursor, depth). mu guards the append queue and is never held with another lock.
type Disk struct {
	dir      string
	opts     Options
	segLimit int64
	fs       fileSystem
	log      *slog.Logger
	m        *metrics
	unlock   func() error
	fresh    bool // Open found neither a cursor nor a segment (see Fresh)
	// incarnation names this life of the directory (incarnation.go); set by Open, then read-only.
	incarnation string

	// Append side.
	mu      sync.Mutex
	chunks  [][]byte   // frames queued for the next batch, in order
	counts  []int      // frames in each chunk
	cbs     []callback // their callbacks, in sequence order
	free    [][]byte   // written chunks for reuse
	queued  int64      // bytes queued or being written, not yet in diskBytes
	nextSeq uint64
	closed  bool

	diskBytes atomic.Int64 // sum of segment sizes
	syncs     atomic.Int64 // fsyncs of batches, for benchmarks and tests

	wake chan struct{} // cap 1: something was appended
	quit chan struct{} // closed by Close
	done chan struct{} // closed when the commit goroutine has exited

	// Commit goroutine only.
	spareChunks [][]byte
	spareCounts []int
	spareCBs    []callback
	failing     bool  // the last batch failed; log recovery once
	flushErr    error // first error while draining on Close

	// Writer's file, guarded by wmu.
	wmu         sync.Mutex
	active      file // last segment, open for writing; nil until the next batch creates one
	activeFirst uint64
	activeSize  int64 // durable size of the active segment
	dirty       bool  // the active segment may hold bytes past activeSize from a failed batch
	raised      bool  // RaiseSeq jumped the sequence: the next batch starts a new segment

	// The cursor file, guarded by cursorMu: written by Commit (a new cursor) and by the commit
	// goroutine (a new sequence lease).
	cursorMu sync.Mutex
	floor    uint64 // persisted floor: every sequence number written to a segment is below it

	// Shared state, guarded by stateMu.
	stateMu     sync.Mutex
	segs        []*segment // ascending; the last one is the one being written
	lastDurable uint64     // highest durable sequence number (or the cursor, if higher)
	cursor      uint64
	unread      int64 // durable entries after the cursor not yet consumed by Next or Commit
	corrupt     int64
	notify      chan struct{} // closed and replaced whenever new entries become durable
	taken       inflight      // consumed by Next or skipped by Commit, not yet committed

	// Consumer side, guarded by readMu.
	readMu sync.Mutex
	rd     reader

	closeOnce sync.Once
	closeErr  error
}

// Open opens the spool in dir, creating it if needed: it locks the directory (a second Open of the
// same directory fails), recovers the segments (truncating a torn tail, skipping corrupt regions;
// each segment is read whole, so memory briefly holds one segment), deletes segments the cursor says
// are delivered, and starts the commit goroutine.
func Open(dir string, opts Options) (*Disk, error) {
	return open(dir, opts, osFS{})
}

func open(dir string, opts Options, fsys fileSystem) (_ *Disk, err error) {
	opts = opts.withDefaults()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	d := &Disk{
		dir:      dir,
		opts:     opts,
		segLimit: opts.segmentLimit(),
		fs:       fsys,
		log:      opts.Logger.With("spool", dir),
		m:        m,
		unlock:   unlock,
		wake:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		notify:   make(chan struct{}),
	}
	defer func() {
		if err != nil {
			d.wmu.Lock()
			if d.active != nil {
				d.active.Close()
			}
			d.wmu.Unlock()
			unlock()
			err = fmt.Errorf("spool: open %s: %w", dir, err)
		}
	}()
	if err := d.recover(); err != nil {
		return nil, err
	}
	d.incarnation = d.loadIncarnation()
	go d.run()
	return d, nil
}

// recover loads the cursor and the segments and sets up the writer and the reader.
func (d *Disk) recover() error {
	cur, err := readCursor(d.dir)
	if errors.Is(err, errCorruptCursor) {
		// Deliver everything still on disk again rather than refuse to start: at-least-once.
		d.log.Error("corrupt cursor file; redelivering every entry on disk", "file", cursorFile)
		d.noteCorrupt()
		cur, err = cursorState{}, nil
	}
	if err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(d.dir, cursorTmpFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	d.cursor, d.floor = cur.committed, cur.floor
	d.nextSeq = max(cur.committed+1, cur.floor, 1)
	d.lastDurable = cur.committed
	d.rd.last = cur.committed

	firsts, err := listSegments(d.dir)
	if err != nil {
		return err
	}
	d.fresh = cur == (cursorState{}) && len(firsts) == 0
	readerSet := false
	for i, first := range firsts {
		var next uint64
		if i+1 < len(firsts) {
			next = firsts[i+1]
		}
		isLast := next == 0
		start := int64(-1) // offset of the first frame after the cursor
		dec, size, err := scanSegmentFile(d.dir, first, next, func(seq uint64, _ []byte, off int64) {
			if seq > cur.committed {
				d.unread++
				if start < 0 {
					start = off
				}
			}
		})
		if err != nil {
			return err
		}
		s := &segment{first: first, size: size, last: dec.last}
		if t, ok := dec.tail(size); ok && isLast {
			if err := d.truncateTail(s, t); err != nil {
				return err
			}
			dec.corrupt = dec.corrupt[:len(dec.corrupt)-1]
		}
		for _, c := range dec.corrupt {
			d.log.Warn("skipping corrupt region", "segment", first, "offset", c.start, "bytes", c.end-c.start)
			d.noteCorrupt()
			if s.skips == nil {
				s.skips = make(map[int64]int64)
			}
			s.skips[c.start] = c.end
		}
		d.nextSeq = max(d.nextSeq, dec.last+1, first+1)
		d.lastDurable = max(d.lastDurable, dec.last)
		if !isLast && next <= cur.committed+1 {
			// Delivered: a crash came between the cursor update and the deletion.
			if err := d.fs.Remove(segmentPath(d.dir, first)); err != nil {
				return err
			}
			continue
		}
		if !readerSet && start >= 0 {
			d.rd.seg, d.rd.off, readerSet = first, start, true
		}
		d.segs = append(d.segs, s)
		d.diskBytes.Add(s.size)
	}
	if n := len(d.segs); n > 0 {
		last := d.segs[n-1]
		if !readerSet {
			d.rd.seg, d.rd.off = last.first, last.size
		}
		f, err := d.fs.OpenFile(segmentPath(d.dir, last.first), os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		d.active, d.activeFirst, d.activeSize = f, last.first, last.size
		if !d.opts.NoSync {
			// What a previous process wrote without fsync is about to be delivered: make it durable.
			if err := f.Sync(); err != nil {
				return err
			}
		}
	}
	d.m.depth.Set(float64(d.unread))
	d.m.size.Set(float64(d.diskBytes.Load()))
	d.log.Info("spool opened", "segments", len(d.segs), "depth", d.unread, "bytes", d.diskBytes.Load(),
		"committed", d.cursor, "next_seq", d.nextSeq, "corrupt", d.corrupt)
	return nil
}

// truncateTail cuts the invalid tail t off the last segment s.
func (d *Disk) truncateTail(s *segment, t span) error {
	d.log.Warn("truncating torn tail", "segment", s.first, "offset", t.start, "bytes", t.end-t.start)
	d.noteCorrupt()
	f, err := d.fs.OpenFile(segmentPath(d.dir, s.first), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(t.start)
	if err == nil && !d.opts.NoSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("truncate segment %d: %w", s.first, err)
	}
	s.size = t.start
	return nil
}

// noteCorrupt counts one corrupt region.
func (d *Disk) noteCorrupt() {
	d.stateMu.Lock()
	d.corrupt++
	d.stateMu.Unlock()
	d.m.corrupt.Inc()
}

// Stats reports the spool's state.
func (d *Disk) Stats() Stats {
	d.mu.Lock()
	next := d.nextSeq
	d.mu.Unlock()
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	return Stats{
		Depth:        d.depthLocked(),
		Bytes:        d.diskBytes.Load(),
		Segments:     len(d.segs),
		Corrupt:      d.corrupt,
		NextSeq:      next,
		CommittedSeq: d.cursor,
	}
}

// depthLocked is the number of durable entries not yet committed. stateMu is held.
func (d *Disk) depthLocked() int64 { return d.unread + d.taken.n }

// Close stops accepting appends, writes and fsyncs everything queued (calling its callbacks), stops
// the commit goroutine, persists the sequence floor if failed batches moved it, and releases the
// directory. It returns the error of the final flush, if any. Close is idempotent.
func (d *Disk) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		close(d.quit)
		<-d.done
		errs := []error{d.flushErr}

		d.readMu.Lock()
		d.rd.closed = true
		d.rd.closeFile()
		d.readMu.Unlock()

		d.wmu.Lock()
		if d.active != nil {
			errs = append(errs, d.repairLocked(), d.active.Close())
			d.active = nil
		}
		d.wmu.Unlock()

		// Failed batches may have used sequence numbers beyond the lease (if extending it failed
		// too): record them so that a restart does not hand them out again.
		d.mu.Lock()
		next := d.nextSeq
		d.mu.Unlock()
		d.cursorMu.Lock()
		if next > d.floor {
			d.stateMu.Lock()
			c := cursorState{committed: d.cursor, floor: next}
			d.stateMu.Unlock()
			errs = append(errs, writeCursor(d.fs, d.dir, c, d.opts.NoSync))
		}
		d.cursorMu.Unlock()
		errs = append(errs, d.unlock())
		if err := errors.Join(errs...); err != nil {
			d.closeErr = fmt.Errorf("spool: close: %w", err)
		}
	})
	return d.closeErr
}
