package registry

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/record"
)

// history adds the numeric properties of an applied record to this Apply's history_log row: one
// entry at the record's received_at, or for a SenML pack (it.Readings) one entry per distinct
// reading time, at the device's time, with the readings' units stored on their properties.
func (a *applyTx) history(th *thingState, it *processor.Item) error {
	if it.Readings != nil {
		return a.readings(th, it.Readings)
	}
	vals := a.w.vals[:0]
	var err error
	it.Doc.Numbers(func(path string, v float64) {
		if err != nil {
			return
		}
		var id int64
		if id, err = a.property(path); err != nil {
			return
		}
		vals = appendValue(vals, id, v)
	})
	a.w.vals = vals
	if err != nil || len(vals) == 0 {
		return err
	}
	a.logEntry(th, it.Record.ReceivedAt.UnixNano(), vals)
	return nil
}

func (a *applyTx) logEntry(th *thingState, t int64, vals []byte) {
	a.w.log = appendLogEntry(a.w.log, th.id, t, vals)
	a.w.logN++
	a.w.pending[th.id]++
}

// readings adds a SenML pack's numeric readings, grouped by time: readings of one name at one
// time keep the later one (as the shadow does).
func (a *applyTx) readings(th *thingState, rs []record.Reading) error {
	byTime := func(x, y record.Reading) int { return cmp.Compare(x.Time, y.Time) }
	if !slices.IsSortedFunc(rs, byTime) {
		rs = slices.Clone(rs)
		slices.SortStableFunc(rs, byTime)
	}
	for len(rs) > 0 {
		n := 1
		for n < len(rs) && rs[n].Time == rs[0].Time {
			n++
		}
		vals := a.w.vals[:0]
		group := rs[:n]
		if n > 16 {
			group = record.Latest(group) // LatestAt is quadratic
		}
		for i, r := range group {
			if !r.IsNum || n <= 16 && !record.LatestAt(group, i) {
				continue
			}
			id, err := a.property(r.Name)
			if err != nil {
				return err
			}
			if err := a.unit(id, r.Name, r.Unit); err != nil {
				return err
			}
			vals = appendValue(vals, id, r.Num)
		}
		a.w.vals = vals
		if len(vals) > 0 {
			a.logEntry(th, rs[0].Time, vals)
		}
		rs = rs[n:]
	}
	return nil
}

// unit stores a property's unit when it changed.
func (a *applyTx) unit(id int64, path, unit string) error {
	if a.w.units == nil {
		a.w.units = map[string]string{}
	}
	if u, ok := a.w.units[path]; ok && u == unit {
		return nil
	}
	if _, err := a.tx.ExecContext(a.ctx, `UPDATE properties SET unit = ? WHERE id = ?`, unit, id); err != nil {
		return fmt.Errorf("property %s unit: %w", path, err)
	}
	a.w.units[path] = unit
	return nil
}

func (a *applyTx) property(path string) (int64, error) {
	if id, ok := a.w.props[path]; ok {
		return id, nil
	}
	id, err := a.insertID(a.st.insProp, path)
	if err != nil {
		return 0, fmt.Errorf("property %s: %w", path, err)
	}
	a.w.props[path] = id
	a.newProps = append(a.newProps, path)
	return id, nil
}

// Compaction. The log's entries are written in generations. When the current generation holds
// logMax entries, the Apply that fills it freezes it (history_compacting records which one) and
// the next entries go to a new generation. The following Applies each compact a slice of the
// frozen generation's things (an eighth, in id order; the cursor in history_compacting moves in
// the same transaction), so that no single batch carries a whole compaction; the Apply that
// compacts the last slice deletes the generation's log rows. On Open, the frozen generation's
// entries of things at or below the cursor are already in chunks and are not loaded again.
const compactionSlices = 8

// compact does this Apply's share of the compaction.
func (a *applyTx) compact() error {
	w := a.w
	full := w.tail.curN+w.logN >= w.opts.logMax
	if w.frozenGen != 0 {
		n := w.sliceSize
		if full { // finish the frozen generation before freezing the next one
			n = len(w.frozenIDs)
		}
		if err := a.compactSlice(w.frozenIDs[:min(n, len(w.frozenIDs))]); err != nil {
			return err
		}
	}
	if full && (w.frozenGen == 0 || a.frozenDone) {
		if _, err := a.tx.ExecContext(a.ctx, `INSERT INTO history_compacting (id, gen, cursor) VALUES (1, ?, ?)
			ON CONFLICT (id) DO UPDATE SET gen = excluded.gen, cursor = excluded.cursor`, w.gen, int64(math.MinInt64)); err != nil {
			return fmt.Errorf("compact history: %w", err)
		}
		a.freeze = true
	}
	return nil
}

// compactSlice writes the frozen entries of the things ids as chunks and trims the things that
// have received HistoryMaxPoints/10 entries since they were last trimmed.
func (a *applyTx) compactSlice(ids []int64) error {
	w := a.w
	es := w.entries[:0]
	for _, id := range ids {
		es = thingEntries(es, w.tail.frozen, id)
	}
	var err error
	w.buf, err = writeChunks(a.putChunk, es, w.buf, w.chunkMax())
	clear(es) // drop the references to the tail's bytes
	w.entries = es[:0]
	if err != nil {
		return err
	}
	every := max(1, w.opts.HistoryMaxPoints/10)
	for _, id := range ids {
		if w.pending[id] >= every {
			if err := a.trim(id); err != nil {
				return err
			}
			delete(w.pending, id)
		}
	}
	a.slice = ids
	if len(ids) == len(w.frozenIDs) {
		a.frozenDone = true
		_, err = a.tx.ExecContext(a.ctx, `DELETE FROM history_log WHERE gen = ?; DELETE FROM history_compacting`, w.frozenGen)
	} else {
		_, err = a.tx.ExecContext(a.ctx, `UPDATE history_compacting SET cursor = ? WHERE id = 1`, ids[len(ids)-1])
	}
	if err != nil {
		return fmt.Errorf("compact history: %w", err)
	}
	return nil
}

// setFrozen makes generation gen, whose entries m holds, the one being compacted.
func (w *writer) setFrozen(gen int64, m map[int64][]byte) {
	w.tail.frozen, w.frozenGen = m, gen
	w.frozenIDs = slices.Sorted(maps.Keys(m))
	w.sliceSize = max(1, (len(w.frozenIDs)+compactionSlices-1)/compactionSlices)
}

// loadLog loads the history log into the tail and the compaction's state.
func (w *writer) loadLog(ctx context.Context, db *sql.DB) error {
	var cgen, cursor, maxGen int64
	err := db.QueryRowContext(ctx, `SELECT gen, cursor FROM history_compacting WHERE id = 1`).Scan(&cgen, &cursor)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if err := db.QueryRowContext(ctx, `SELECT coalesce(max(gen), 0) FROM history_log`).Scan(&maxGen); err != nil {
		return err
	}
	w.gen = max(maxGen, 1)
	if cgen != 0 {
		w.gen = max(maxGen, cgen+1)
	}
	cur, frozen := map[int64][]byte{}, map[int64][]byte{}
	err = eachRow(db.QueryContext(ctx, `SELECT gen, data FROM history_log ORDER BY id`))(func(rows *sql.Rows) error {
		var gen int64
		var data []byte
		if err := rows.Scan(&gen, &data); err != nil {
			return err
		}
		if gen == cgen {
			_, err := appendEntries(frozen, data, cursor)
			return err
		}
		n, err := appendEntries(cur, data, math.MinInt64)
		w.tail.curN += n
		return err
	})
	if err != nil {
		return err
	}
	w.tail.cur = cur
	if cgen != 0 {
		w.setFrozen(cgen, frozen)
	}
	return nil
}

// chunkMax is the most entries a compaction puts in one chunk, so that retention, which deletes
// whole chunks, keeps at most a quarter more than HistoryMaxPoints.
func (w *writer) chunkMax() int { return max(1, w.opts.HistoryMaxPoints/4) }

// trim deletes a thing's history chunks that are not needed for its newest HistoryMaxPoints
// entries, and those older than HistoryMaxAge: range deletes on the (thing_id, t_first) key.
func (a *applyTx) trim(thing int64) error {
	keep, total := int64(math.MinInt64), 0
	err := eachRow(a.st.selChunks.QueryContext(a.ctx, thing))(func(rows *sql.Rows) error {
		var first int64
		var n int
		if err := rows.Scan(&first, &n); err != nil {
			return err
		}
		if total += n; total >= a.w.opts.HistoryMaxPoints {
			keep = first
			return errStopRows
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("trim history: %w", err)
	}
	if keep != math.MinInt64 {
		if _, _, err := a.dropChunks(a.st.delChunks, thing, keep); err != nil {
			return fmt.Errorf("trim history: %w", err)
		}
	}
	if _, _, err := a.dropChunks(a.st.delAged, thing, a.now-a.w.opts.HistoryMaxAge.Nanoseconds()); err != nil {
		return fmt.Errorf("trim history: %w", err)
	}
	return nil
}

// agedPerApply is how many things' history each Apply trims by age, round robin.
const agedPerApply = 32

// pruneAge deletes the chunks older than HistoryMaxAge of the next few things (by id, wrapping
// around), so things that stopped reporting still lose their old history.
func (a *applyTx) pruneAge() error {
	ids := make([]int64, 0, agedPerApply)
	err := eachRow(a.st.nextThings.QueryContext(a.ctx, a.w.pruneCursor, agedPerApply))(func(rows *sql.Rows) error {
		var id int64
		err := rows.Scan(&id)
		ids = append(ids, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("age pruning: %w", err)
	}
	cutoff := a.now - a.w.opts.HistoryMaxAge.Nanoseconds()
	for _, id := range ids {
		if _, _, err := a.dropChunks(a.st.delAged, id, cutoff); err != nil {
			return fmt.Errorf("age pruning: %w", err)
		}
	}
	if len(ids) < agedPerApply {
		a.w.pruneCursor = 0
	} else {
		a.w.pruneCursor = ids[len(ids)-1]
	}
	return nil
}
