package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/coapgw/coapgw/internal/processor"
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
	props  map[string]int64 // property path → id

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
}

type thingState struct {
	id                  int64
	typeID              int64
	firstSeen, lastSeen int64
	seen                int64 // the stored seen column: lastSeen in whole seconds, when last written
	messages, version   int64
	doc                 *processor.Doc
}

type stmts struct {
	selThing, selShadow, insType, incType, insThing, updThing, updThingMeta, updSeen,
	insProp, insLog, insChunk, selChunks, delChunks, delAged, nextThings,
	insSetAside, upMark, upTotals *sql.Stmt
}

func (s *stmts) all() []**sql.Stmt {
	return []**sql.Stmt{&s.selThing, &s.selShadow, &s.insType, &s.incType, &s.insThing, &s.updThing,
		&s.updThingMeta, &s.updSeen, &s.insProp, &s.insLog, &s.insChunk, &s.selChunks, &s.delChunks,
		&s.delAged, &s.nextThings, &s.insSetAside, &s.upMark, &s.upTotals}
}

var stmtSQL = map[string]string{
	"selThing":     `SELECT id, type_id, first_seen, last_seen, seen, messages, version, shadow FROM things WHERE name = ?`,
	"selShadow":    `SELECT shadow FROM things WHERE id = ?`,
	"insType":      `INSERT INTO thing_types (name, created_at) VALUES (?, ?)`,
	"incType":      `UPDATE thing_types SET things = things + 1 WHERE id = ?`,
	"insThing":     `INSERT INTO things (name, type_id, first_seen, last_seen, seen, messages, version, shadow) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
	"updThing":     `UPDATE things SET first_seen = ?, last_seen = ?, messages = ?, version = ?, shadow = ? WHERE id = ?`,
	"updThingMeta": `UPDATE things SET first_seen = ?, last_seen = ?, messages = ? WHERE id = ?`,
	"updSeen":      `UPDATE things SET seen = ? WHERE id = ?`,
	"insProp":      `INSERT INTO properties (path) VALUES (?)`,
	"insLog":       `INSERT INTO history_log (gen, entries, data) VALUES (?, ?, ?)`,
	"insChunk":     insChunkSQL,
	"selChunks":    chunksForRetention,
	"delChunks":    `DELETE FROM history WHERE thing_id = ? AND t_first < ?`,
	"delAged":      `DELETE FROM history WHERE thing_id = ? AND t_last < ?`,
	"nextThings":   `SELECT id FROM things WHERE id > ? ORDER BY id LIMIT ?`,
	"insSetAside": `INSERT OR IGNORE INTO set_asides (gw, seq, received_at, type, thing, reason, payload, at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
	"upMark":   `INSERT INTO applied (gw, seq) VALUES (?, ?) ON CONFLICT (gw) DO UPDATE SET seq = max(seq, excluded.seq)`,
	"upTotals": `UPDATE totals SET things = things + ?, messages = messages + ?, set_aside = set_aside + ? WHERE id = 1`,
}

var stmtOrder = []string{"selThing", "selShadow", "insType", "incType", "insThing", "updThing",
	"updThingMeta", "updSeen", "insProp", "insLog", "insChunk", "selChunks", "delChunks", "delAged",
	"nextThings", "insSetAside", "upMark", "upTotals"}

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
	return nil
}

func (w *writer) close() {
	for _, p := range w.st.all() {
		if *p != nil {
			(*p).Close()
		}
	}
}

// Apply applies a batch in one transaction: records at or below their gateway's high-water mark
// are duplicates, records the processor failed are set aside, each update is merged into its
// thing's shadow (or set aside), history points are added, the marks move. It implements
// processor.Sink; an error means nothing was written.
func (r *Registry) Apply(ctx context.Context, b *processor.Batch) ([]processor.Outcome, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errClosed
	}
	if r.w.opts == nil {
		return nil, errors.New("registry opened read-only for migration tests")
	}
	return r.w.apply(ctx, r.wdb, b)
}

// applyTx is one Apply's transaction.
type applyTx struct {
	w   *writer
	ctx context.Context
	tx  *sql.Tx
	st  stmts // tx-bound
	now int64
	out []processor.Outcome

	marks                          map[string]uint64
	slice                          []int64 // things of the frozen generation compacted
	frozenDone, freeze             bool    // the frozen generation is all compacted; the current one is frozen
	newThings, messages, setAsides int64
	touched                        []string
	newProps                       []string
	newTypes                       []string
	live                           []int
}

func (w *writer) apply(ctx context.Context, db *sql.DB, b *processor.Batch) (_ []processor.Outcome, err error) {
	w.evict()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("registry: begin: %w", err)
	}
	a := &applyTx{
		w: w, ctx: ctx, tx: tx,
		now:   w.opts.Now().UnixNano(),
		out:   make([]processor.Outcome, len(b.Items)),
		marks: map[string]uint64{},
	}
	w.log, w.logN = w.log[:0], 0
	tp, wp := a.st.all(), w.st.all()
	for i := range tp {
		*tp[i] = tx.StmtContext(ctx, *wp[i])
	}
	defer func() {
		if err != nil {
			tx.Rollback()
			a.undo()
		}
	}()
	if err := a.run(b); err != nil {
		return nil, fmt.Errorf("registry: apply: %w", err)
	}
	if err := a.commit(); err != nil {
		return nil, fmt.Errorf("registry: commit: %w", err)
	}
	for gw, seq := range a.marks {
		w.marks[gw] = seq
	}
	return a.out, nil
}

// commit commits the transaction and moves the history tail in step (see tail): this Apply's
// log entries are added to it, the things it compacted leave it, and if it froze the current
// generation, that becomes the one to compact.
func (a *applyTx) commit() error {
	w := a.w
	tl := &w.tail
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if err := a.tx.Commit(); err != nil {
		return err
	}
	for _, id := range a.slice {
		delete(tl.frozen, id)
	}
	w.frozenIDs = w.frozenIDs[len(a.slice):]
	if a.frozenDone {
		tl.frozen, w.frozenGen, w.frozenIDs = nil, 0, nil
	}
	if w.logN > 0 {
		if tl.cur == nil {
			tl.cur = map[int64][]byte{}
		}
		n, err := appendEntries(tl.cur, w.log, math.MinInt64)
		if err != nil { // cannot happen: the writer encoded it
			panic(err)
		}
		tl.curN += n
	}
	if a.freeze {
		w.setFrozen(w.gen, tl.cur)
		tl.cur, tl.curN = map[int64][]byte{}, 0
		w.gen++
	}
	return nil
}

// setFrozen makes generation gen, whose entries m holds, the one being compacted.
func (w *writer) setFrozen(gen int64, m map[int64][]byte) {
	w.tail.frozen, w.frozenGen = m, gen
	w.frozenIDs = slices.Sorted(maps.Keys(m))
	w.sliceSize = max(1, (len(w.frozenIDs)+compactionSlices-1)/compactionSlices)
}

// undo forgets what the failed transaction put into the writer's memory.
func (a *applyTx) undo() {
	for _, name := range a.touched {
		delete(a.w.things, name)
	}
	for _, path := range a.newProps {
		delete(a.w.props, path)
	}
	for _, name := range a.newTypes {
		delete(a.w.tnames, a.w.types[name])
		delete(a.w.types, name)
	}
}

func (a *applyTx) run(b *processor.Batch) error {
	for i := range b.Items {
		it := &b.Items[i]
		if it.Seq <= a.w.marks[it.Record.GW] {
			a.out[i] = processor.Outcome{Result: processor.Duplicate}
			continue
		}
		a.marks[it.Record.GW] = max(a.marks[it.Record.GW], it.Seq)
	}
	for i := range b.Items {
		if it := &b.Items[i]; a.out[i].Result == 0 && it.Err != nil {
			if err := a.setAside(it, i, it.Err.Error()); err != nil {
				return err
			}
		}
	}
	for i := range b.Updates {
		if err := a.update(b, &b.Updates[i]); err != nil {
			return err
		}
	}
	for gw, seq := range a.marks {
		if _, err := a.st.upMark.ExecContext(a.ctx, gw, int64(seq)); err != nil {
			return fmt.Errorf("high-water mark: %w", err)
		}
	}
	if a.newThings != 0 || a.messages != 0 || a.setAsides != 0 {
		if _, err := a.st.upTotals.ExecContext(a.ctx, a.newThings, a.messages, a.setAsides); err != nil {
			return fmt.Errorf("totals: %w", err)
		}
	}
	if a.w.logN > 0 {
		if _, err := a.st.insLog.ExecContext(a.ctx, a.w.gen, a.w.logN, a.w.log); err != nil {
			return fmt.Errorf("insert history: %w", err)
		}
	}
	if err := a.compact(); err != nil {
		return err
	}
	return a.pruneAge()
}

func (a *applyTx) setAside(it *processor.Item, i int, reason string) error {
	a.out[i] = processor.Outcome{Result: processor.SetAside, Reason: reason}
	payload := it.Record.Payload
	if it.Raw != nil {
		payload = it.Raw
	}
	res, err := a.st.insSetAside.ExecContext(a.ctx, it.Record.GW, int64(it.Seq),
		it.Record.ReceivedAt.UnixNano(), it.Record.Type, it.Record.ID, reason, payload, a.now)
	if err != nil {
		return fmt.Errorf("set aside: %w", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		a.setAsides++
	}
	return nil
}

func (a *applyTx) update(b *processor.Batch, u *processor.Update) error {
	live := a.live[:0]
	for _, i := range u.Items {
		if a.out[i].Result == 0 {
			live = append(live, i)
		}
	}
	a.live = live
	if len(live) == 0 {
		return nil
	}
	patch := u.Doc
	if len(live) != len(u.Items) {
		patch = b.Coalesce(live)
	}
	th, err := a.thing(u.Thing)
	if err != nil {
		return err
	}
	isNew := th == nil
	if isNew {
		typeID, err := a.thingType(u.Type)
		if err != nil {
			return err
		}
		th = &thingState{typeID: typeID, doc: processor.NewDoc(), firstSeen: 1<<63 - 1}
	} else if a.w.types[u.Type] != th.typeID {
		reason := fmt.Sprintf("thing %s exists with type %s", u.Thing, a.w.tnames[th.typeID])
		for _, i := range live {
			if err := a.setAside(&b.Items[i], i, reason); err != nil {
				return err
			}
		}
		return nil
	}

	changed := th.doc.Merge(patch)
	if changed && th.doc.CheckLimits() != "" {
		// Find the records that do not fit, one by one, from the state before this batch.
		if th.doc, err = a.storedDoc(th.id); err != nil {
			return err
		}
		changed = false
		for _, i := range live {
			c := th.doc.Clone()
			if !c.Merge(b.Items[i].Doc) {
				continue
			}
			if reason := c.CheckLimits(); reason != "" {
				if err := a.setAside(&b.Items[i], i, reason); err != nil {
					return err
				}
				continue
			}
			th.doc, changed = c, true
		}
	}
	var applied int64
	for _, i := range live {
		t := b.Items[i].Record.ReceivedAt.UnixNano()
		th.firstSeen, th.lastSeen = min(th.firstSeen, t), max(th.lastSeen, t)
		if a.out[i].Result == 0 {
			a.out[i] = processor.Outcome{Result: processor.Applied}
			applied++
		}
	}
	th.messages += applied
	a.messages += applied
	if changed {
		th.version++
	}
	if err := a.saveThing(u, th, isNew, changed); err != nil {
		return err
	}
	for _, i := range live {
		if a.out[i].Result == processor.Applied {
			if err := a.history(th, &b.Items[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *applyTx) saveThing(u *processor.Update, th *thingState, isNew, changed bool) error {
	a.touched = append(a.touched, u.Thing)
	if isNew {
		a.w.buf = th.doc.AppendBinary(a.w.buf[:0])
		th.seen = seenSecond(th.lastSeen)
		res, err := a.st.insThing.ExecContext(a.ctx, u.Thing, th.typeID, th.firstSeen, th.lastSeen,
			th.seen, th.messages, th.version, a.w.buf)
		if err != nil {
			return fmt.Errorf("insert thing %s: %w", u.Thing, err)
		}
		if th.id, err = res.LastInsertId(); err != nil {
			return fmt.Errorf("insert thing %s: %w", u.Thing, err)
		}
		if _, err := a.st.incType.ExecContext(a.ctx, th.typeID); err != nil {
			return fmt.Errorf("count thing type: %w", err)
		}
		a.newThings++
		a.w.things[u.Thing] = th
		return nil
	}
	var err error
	if changed {
		a.w.buf = th.doc.AppendBinary(a.w.buf[:0])
		_, err = a.st.updThing.ExecContext(a.ctx, th.firstSeen, th.lastSeen, th.messages, th.version, a.w.buf, th.id)
	} else {
		_, err = a.st.updThingMeta.ExecContext(a.ctx, th.firstSeen, th.lastSeen, th.messages, th.id)
	}
	if err != nil {
		return fmt.Errorf("update thing %s: %w", u.Thing, err)
	}
	if s := seenSecond(th.lastSeen); s != th.seen {
		if _, err := a.st.updSeen.ExecContext(a.ctx, s, th.id); err != nil {
			return fmt.Errorf("update thing %s: %w", u.Thing, err)
		}
		th.seen = s
	}
	return nil
}

// seenSecond is the seen column for a last_seen: whole seconds. The things list is ordered by
// it, so its indexes change at most once a second per thing, not with every record.
func seenSecond(lastSeen int64) int64 { return lastSeen / 1e9 }

// thing returns the thing's state from memory or the database, nil if it does not exist.
func (a *applyTx) thing(name string) (*thingState, error) {
	if th := a.w.things[name]; th != nil {
		return th, nil
	}
	th := &thingState{}
	var blob []byte
	err := a.st.selThing.QueryRowContext(a.ctx, name).Scan(&th.id, &th.typeID, &th.firstSeen, &th.lastSeen,
		&th.seen, &th.messages, &th.version, &blob)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load thing %s: %w", name, err)
	}
	if th.doc, err = decodeShadow(blob); err != nil {
		return nil, fmt.Errorf("load thing %s: %w", name, err)
	}
	a.w.things[name] = th
	a.touched = append(a.touched, name)
	return th, nil
}

// storedDoc reads a thing's shadow as committed before this transaction changed it.
func (a *applyTx) storedDoc(id int64) (*processor.Doc, error) {
	if id == 0 {
		return processor.NewDoc(), nil
	}
	var blob []byte
	if err := a.st.selShadow.QueryRowContext(a.ctx, id).Scan(&blob); err != nil {
		return nil, fmt.Errorf("reload shadow: %w", err)
	}
	return decodeShadow(blob)
}

func decodeShadow(blob []byte) (*processor.Doc, error) {
	d := processor.NewDoc()
	if len(blob) == 0 {
		return d, nil
	}
	if err := d.UnmarshalBinary(blob); err != nil {
		return nil, err
	}
	return d, nil
}

func (a *applyTx) thingType(name string) (int64, error) {
	if id, ok := a.w.types[name]; ok {
		return id, nil
	}
	res, err := a.st.insType.ExecContext(a.ctx, name, a.now)
	if err != nil {
		return 0, fmt.Errorf("create thing type %s: %w", name, err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("create thing type %s: %w", name, err)
	}
	a.w.types[name], a.w.tnames[id] = id, name
	a.newTypes = append(a.newTypes, name)
	return id, nil
}

// history adds the numeric properties of an applied record to this Apply's history_log row.
func (a *applyTx) history(th *thingState, it *processor.Item) error {
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
	a.w.log = appendLogEntry(a.w.log, th.id, it.Record.ReceivedAt.UnixNano(), vals)
	a.w.logN++
	a.w.pending[th.id]++
	return nil
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
	w.buf, err = writeChunks(a.ctx, a.st.insChunk, es, w.buf, w.chunkMax())
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

func (a *applyTx) property(path string) (int64, error) {
	if id, ok := a.w.props[path]; ok {
		return id, nil
	}
	res, err := a.st.insProp.ExecContext(a.ctx, path)
	if err != nil {
		return 0, fmt.Errorf("property %s: %w", path, err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("property %s: %w", path, err)
	}
	a.w.props[path] = id
	a.newProps = append(a.newProps, path)
	return id, nil
}

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
		if _, err := a.st.delChunks.ExecContext(a.ctx, thing, keep); err != nil {
			return fmt.Errorf("trim history: %w", err)
		}
	}
	if _, err := a.st.delAged.ExecContext(a.ctx, thing, a.now-a.w.opts.HistoryMaxAge.Nanoseconds()); err != nil {
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
		if _, err := a.st.delAged.ExecContext(a.ctx, id, cutoff); err != nil {
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
