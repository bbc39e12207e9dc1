package registry

import (
	"context"
	"database/sql"
	"fmt"
)

// writer is the state of the single writer: prepared statements and what it keeps in memory.
// Everything here is guarded by Registry.mu.
type writer struct {
	opts *Options
	st   stmts

	types  map[string]int64 // thing type name → id
	tnames map[int64]string
	marks  map[string]uint64 // gw → highest seq processed
	things map[string]*thingState
	props  map[string]int64  // property path → id
	units  map[string]string // property path → its unit as stored; nil after a rollback

	pending     map[int64]int // thing id → history entries added since its history was last trimmed
	pruneCursor int64         // round-robin position of the age pruning, a thing id
	buf, vals   []byte
	tail        tail    // the committed history log, by thing
	gen         int64   // generation of the log rows being written
	frozenGen   int64   // generation being compacted, 0 = none
	frozenIDs   []int64 // things of frozenGen not compacted yet, in id order
	sliceSize   int     // things compacted per Apply
	log         []byte  // this Apply's history_log row
	logN        int     // entries in log
	entries     []entry // compaction scratch

	setAsideN int64 // set-aside records held (totals.set_aside)
	histBytes int64 // the history's estimated size on disk (totals.history_bytes, bounds.go)
	pageSize  int
	m         *metrics
	dl        downlink // desired state and deltas (desired.go)
}

type stmts struct {
	selThing, selShadow, insType, incType, insThing, updThing, updThingMeta, updSeen,
	insProp, insLog, insChunk, selChunks, delChunks, delAged, nextThings,
	insSetAside, upMark, upTotals, dropSetAsides, selOldest, delChunk, insChunkNew, updFirst *sql.Stmt
}

func (s *stmts) all() []**sql.Stmt {
	return []**sql.Stmt{&s.selThing, &s.selShadow, &s.insType, &s.incType, &s.insThing, &s.updThing,
		&s.updThingMeta, &s.updSeen, &s.insProp, &s.insLog, &s.insChunk, &s.selChunks, &s.delChunks,
		&s.delAged, &s.nextThings, &s.insSetAside, &s.upMark, &s.upTotals, &s.dropSetAsides, &s.selOldest,
		&s.delChunk, &s.insChunkNew, &s.updFirst}
}

var stmtSQL = map[string]string{
	"selThing":     `SELECT id, type_id, first_seen, last_seen, seen, counted, messages, version, shadow FROM things WHERE name = ?`,
	"selShadow":    `SELECT shadow FROM things WHERE id = ?`,
	"insType":      `INSERT INTO thing_types (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET name = name RETURNING id`,
	"incType":      `UPDATE thing_types SET things = things + 1 WHERE id = ?`,
	"insThing":     `INSERT INTO things (name, type_id, first_seen, last_seen, seen, messages, counted, version, shadow) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	"updThing":     `UPDATE things SET last_seen = ?, messages = ?, version = ?, shadow = ? WHERE id = ?`,
	"updThingMeta": `UPDATE things SET last_seen = ?, messages = ? WHERE id = ?`,
	"updSeen":      `UPDATE things SET seen = ?, counted = ? WHERE id = ?`,
	"updFirst":     `UPDATE things SET first_seen = ? WHERE id = ?`,
	"insProp":      `INSERT INTO properties (path) VALUES (?)`,
	"insLog":       `INSERT INTO history_log (gen, entries, data) VALUES (?, ?, ?)`,
	"insChunk":     insChunkSQL + ` RETURNING octet_length(data)`,
	"selChunks":    chunksForRetention,
	"delChunks":    `DELETE FROM history WHERE thing_id = ? AND t_first < ? RETURNING octet_length(data), n`,
	"delAged":      `DELETE FROM history WHERE thing_id = ? AND t_last < ? RETURNING octet_length(data), n`,
	"nextThings":   `SELECT id FROM things WHERE id > ? ORDER BY id LIMIT ?`,
	"insSetAside": `INSERT OR IGNORE INTO set_asides (gw, seq, received_at, type, thing, reason, payload, at, format)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
	"upMark": `INSERT INTO applied (gw, seq) VALUES (?, ?) ON CONFLICT (gw) DO UPDATE SET seq = max(seq, excluded.seq)`,
	"upTotals": `UPDATE totals SET things = things + ?, messages = messages + ?, set_aside = set_aside + ?,
		set_aside_dropped = set_aside_dropped + ?, history_bytes = history_bytes + ? WHERE id = 1`,
	"dropSetAsides": `DELETE FROM set_asides WHERE id IN (SELECT id FROM set_asides ORDER BY id LIMIT ?)`,
	"selOldest":     `SELECT thing_id, t_first FROM history ORDER BY t_last LIMIT ?`,
	"delChunk":      `DELETE FROM history WHERE thing_id = ? AND t_first = ? RETURNING octet_length(data), n`,
	"insChunkNew":   `INSERT INTO history (thing_id, t_first, t_last, n, data) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
}

var stmtOrder = []string{"selThing", "selShadow", "insType", "incType", "insThing", "updThing",
	"updThingMeta", "updSeen", "insProp", "insLog", "insChunk", "selChunks", "delChunks", "delAged",
	"nextThings", "insSetAside", "upMark", "upTotals", "dropSetAsides", "selOldest", "delChunk", "insChunkNew",
	"updFirst"}

// init prepares the statements and loads thing types and high-water marks.
func (w *writer) init(ctx context.Context, db *sql.DB, opts *Options) error {
	w.opts = opts
	w.types = map[string]int64{}
	w.tnames = map[int64]string{}
	w.marks = map[string]uint64{}
	w.things = map[string]*thingState{}
	w.props = map[string]int64{}
	w.pending = map[int64]int{}
	for i, p := range w.st.all() {
		s, err := db.PrepareContext(ctx, stmtSQL[stmtOrder[i]])
		if err != nil {
			return fmt.Errorf("prepare %s: %w", stmtOrder[i], err)
		}
		*p = s
	}
	err := eachRow(db.QueryContext(ctx, `SELECT id, name FROM thing_types`))(func(rows *sql.Rows) error {
		var id int64
		var name string
		err := rows.Scan(&id, &name)
		w.types[name], w.tnames[id] = id, name
		return err
	})
	if err != nil {
		return fmt.Errorf("load thing types: %w", err)
	}
	err = eachRow(db.QueryContext(ctx, `SELECT id, path FROM properties`))(func(rows *sql.Rows) error {
		var id int64
		var path string
		err := rows.Scan(&id, &path)
		w.props[path] = id
		return err
	})
	if err != nil {
		return fmt.Errorf("load properties: %w", err)
	}
	if err := db.QueryRowContext(ctx, `SELECT set_aside, history_bytes, (SELECT page_size FROM pragma_page_size)
		FROM totals WHERE id = 1`).Scan(&w.setAsideN, &w.histBytes, &w.pageSize); err != nil {
		return fmt.Errorf("load totals: %w", err)
	}
	w.m.setAsideHeld.Set(float64(w.setAsideN))
	w.m.historyBytes.Set(float64(w.histBytes))
	if err := w.loadLog(ctx, db); err != nil {
		return fmt.Errorf("load history log: %w", err)
	}
	err = eachRow(db.QueryContext(ctx, `SELECT gw, seq FROM applied`))(func(rows *sql.Rows) error {
		var gw string
		var seq int64
		err := rows.Scan(&gw, &seq)
		w.marks[gw] = uint64(seq)
		return err
	})
	if err != nil {
		return fmt.Errorf("load marks: %w", err)
	}
	if err := w.loadDesired(ctx, db); err != nil {
		return fmt.Errorf("load desired state: %w", err)
	}
	return nil
}

func (w *writer) close() {
	for _, p := range w.st.all() {
		if *p != nil {
			(*p).Close()
		}
	}
}

// evict keeps the in-memory caches within their bounds (arbitrary entries go; they are reloaded
// from the database when needed).
func (w *writer) evict() {
	if limit := w.opts.CacheThings; len(w.things) > limit {
		for name := range w.things {
			delete(w.things, name)
			if len(w.things) <= limit*9/10 {
				break
			}
		}
	}
}
