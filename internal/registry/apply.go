package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"

	"github.com/coapgw/coapgw/internal/processor"
)

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
	return r.w.apply(ctx, r.wdb, b, nil)
}

// HighWater returns gw's high-water mark: the highest sequence number of gw's records the
// registry has processed (0 if none). A spool feeding the registry must hand out numbers above
// it, or its records are taken for duplicates; the gateway raises its spool's sequence past it
// at start (spool.Disk.RaiseSeq).
func (r *Registry) HighWater(gw string) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errClosed
	}
	return r.w.marks[gw], nil
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
	retry                          []int64 // retry.go: the set_asides row of each item, nil otherwise
	slice                          []int64 // things of the frozen generation compacted
	frozenDone, freeze             bool    // the frozen generation is all compacted; the current one is frozen
	newThings, messages, setAsides int64
	setAsideDropped, histBytes     int64 // bounds.go
	sizeDropped, sizeDroppedChunks int64
	touched                        []string
	newProps                       []string
	newTypes                       []string
	live                           []int
}

// apply applies b in one transaction. retry, when not nil, holds for each item the set_asides row
// it is retried from (retry.go): the item is applied (or set aside again) only if it takes that
// row, in the same transaction, and the high-water marks are left alone.
func (w *writer) apply(ctx context.Context, db *sql.DB, b *processor.Batch, retry []int64) (_ []processor.Outcome, err error) {
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
		retry: retry,
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
	w.refreshDeltas(a.touched)
	w.setAsideN += a.setAsides - a.setAsideDropped
	w.histBytes += a.histBytes
	w.m.setAsideHeld.Set(float64(w.setAsideN))
	w.m.setAsideDropped.Add(float64(a.setAsideDropped))
	w.m.historyBytes.Set(float64(w.histBytes))
	w.m.historyDropped.Add(float64(a.sizeDropped))
	w.m.historyDroppedChunks.Add(float64(a.sizeDroppedChunks))
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

// undo forgets what the failed transaction put into the writer's memory.
func (a *applyTx) undo() {
	for _, name := range a.touched {
		delete(a.w.things, name)
	}
	for _, path := range a.newProps {
		delete(a.w.props, path)
	}
	a.w.units = nil
	for _, name := range a.newTypes {
		delete(a.w.tnames, a.w.types[name])
		delete(a.w.types, name)
	}
}

func (a *applyTx) run(b *processor.Batch) error {
	if err := a.marksOrRetry(b); err != nil {
		return err
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
	if err := a.capSetAsides(); err != nil {
		return err
	}
	if a.w.logN > 0 {
		if _, err := a.st.insLog.ExecContext(a.ctx, a.w.gen, a.w.logN, a.w.log); err != nil {
			return fmt.Errorf("insert history: %w", err)
		}
	}
	if err := a.compact(); err != nil {
		return err
	}
	if err := a.pruneAge(); err != nil {
		return err
	}
	if err := a.capHistory(); err != nil {
		return err
	}
	if a.newThings != 0 || a.messages != 0 || a.setAsides != 0 || a.histBytes != 0 {
		if _, err := a.st.upTotals.ExecContext(a.ctx, a.newThings, a.messages, a.setAsides-a.setAsideDropped,
			a.setAsideDropped, a.histBytes); err != nil {
			return fmt.Errorf("totals: %w", err)
		}
	}
	return nil
}

// marksOrRetry tells the records to apply from the others: those at or below their gateway's
// high-water mark are duplicates, and the marks move past the rest; a retry instead takes each
// record's set-aside row (retry.go).
func (a *applyTx) marksOrRetry(b *processor.Batch) error {
	if a.retry != nil {
		return a.takeSetAsides()
	}
	for i := range b.Items {
		it := &b.Items[i]
		if it.Seq <= a.w.marks[it.Record.GW] {
			a.out[i] = processor.Outcome{Result: processor.Duplicate}
			continue
		}
		a.marks[it.Record.GW] = max(a.marks[it.Record.GW], it.Seq)
	}
	return nil
}

func (a *applyTx) setAside(it *processor.Item, i int, reason string) error {
	a.out[i] = processor.Outcome{Result: processor.SetAside, Reason: reason}
	payload, format := it.Record.Payload, int64(it.Record.ContentFormat)
	if it.Raw != nil {
		payload, format = it.Raw, formatRaw
	}
	res, err := a.st.insSetAside.ExecContext(a.ctx, it.Record.GW, int64(it.Seq),
		it.Record.ReceivedAt.UnixNano(), it.Record.Type, it.Record.ID, reason, payload, a.now, format)
	if err != nil {
		return fmt.Errorf("set aside: %w", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		a.setAsides++
	}
	return nil
}

// formatRaw is the set_asides format of a record whose payload column holds the whole encoded
// record, which could not be decoded (migration 9); NULL is unknown, any other the record's
// content format.
const formatRaw = -1
