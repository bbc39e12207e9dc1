package spool

import "fmt"

// RaiseSeq makes every sequence number the spool hands out from now on at least least, and
// persists that floor in the cursor file before it returns, so a restart keeps it too. It never
// lowers anything: if the next sequence number is already at or above least, it does nothing and
// returns false. It returns true when it raised the sequence.
//
// The stage after the spool calls it at start with what it knows about the numbers already used
// (local mode: the registry's high-water mark for this gateway + 1; AWS mode, for a spool that
// Fresh reports as new: the wall clock in nanoseconds), so that a spool directory deleted or
// replaced while the processor's state was kept never hands out sequence numbers the processor
// would take for duplicates. Call it before the first Append.
func (d *Disk) RaiseSeq(least uint64) (bool, error) {
	d.mu.Lock()
	next := d.nextSeq
	d.mu.Unlock()
	if next >= least {
		return false, nil
	}
	d.cursorMu.Lock()
	if least > d.floor {
		d.stateMu.Lock()
		c := cursorState{committed: d.cursor, floor: least}
		d.stateMu.Unlock()
		if err := writeCursor(d.fs, d.dir, c, d.opts.NoSync); err != nil {
			d.cursorMu.Unlock()
			return false, fmt.Errorf("spool: raise sequence: %w", err)
		}
		d.floor = least
	}
	d.cursorMu.Unlock()
	// The next batch goes to a new segment named by its first number: within a segment, recovery
	// accepts a frame only within maxSeqJump of the one before it.
	d.wmu.Lock()
	d.raised = true
	d.wmu.Unlock()
	d.mu.Lock()
	d.nextSeq = max(d.nextSeq, least)
	d.mu.Unlock()
	d.log.Info("sequence raised", "from", next, "to", least)
	return true, nil
}

// Fresh reports whether Open found no spool state (no cursor file and no segment): the directory
// was new, emptied or deleted, so the sequence restarted at 1 and nothing in it says which numbers
// an earlier spool in its place handed out. See RaiseSeq.
func (d *Disk) Fresh() bool { return d.fresh }

// RaiseSeq is Disk.RaiseSeq for the memory log (nothing to persist).
func (l *Memory) RaiseSeq(least uint64) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nextSeq >= least {
		return false, nil
	}
	l.nextSeq = least
	return true, nil
}
