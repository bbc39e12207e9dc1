package spool

import (
	"errors"
	"fmt"
)

// ScanStats counts what Scan saw.
type ScanStats struct {
	Segments     int    // segment files read
	Entries      int64  // entries passed to fn
	Delivered    int64  // valid entries at or below the cursor, not passed to fn (all == false)
	Corrupt      int64  // corrupt regions, including a torn tail and a damaged cursor file
	CommittedSeq uint64 // the cursor
}

// Scan reads the spool in dir offline and read-only: it repairs nothing and takes no lock, so it may
// run next to a live spool (whose last segment may then show a torn tail being written). It calls fn
// for every valid entry after the cursor, or for every valid entry if all is true, in sequence order,
// and stops at the first error fn returns. Entry.Data is only valid during the call.
func Scan(dir string, all bool, fn func(Entry) error) (ScanStats, error) {
	var st ScanStats
	cur, err := readCursor(dir)
	if errors.Is(err, errCorruptCursor) {
		st.Corrupt++
		cur, err = cursorState{}, nil
	}
	if err != nil {
		return st, fmt.Errorf("spool: scan %s: %w", dir, err)
	}
	st.CommittedSeq = cur.committed
	firsts, err := listSegments(dir)
	if err != nil {
		return st, fmt.Errorf("spool: scan %s: %w", dir, err)
	}
	var fnErr error
	for i, first := range firsts {
		var next uint64
		if i+1 < len(firsts) {
			next = firsts[i+1]
		}
		dec, _, err := scanSegmentFile(dir, first, next, func(seq uint64, data []byte, _ int64) {
			if fnErr != nil {
				return
			}
			if !all && seq <= cur.committed {
				st.Delivered++
				return
			}
			st.Entries++
			fnErr = fn(Entry{Seq: seq, Data: data})
		})
		if err != nil {
			return st, fmt.Errorf("spool: scan %s: %w", dir, err)
		}
		st.Segments++
		st.Corrupt += int64(len(dec.corrupt))
		if fnErr != nil {
			return st, fnErr
		}
	}
	return st, nil
}
