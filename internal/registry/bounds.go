package registry

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Bounds on what one host can make the registry store (besides --max-things, enforced by the
// device API, and the history's age and points per thing, history_write.go):
//
// MaxSetAside. The set_asides table keeps the newest MaxSetAside records: an Apply that takes it
// past the cap deletes the oldest rows (lowest id) in the same transaction, at most
// setAsideDropPerApply more than it inserted, so that a cap lowered under a large table converges
// over a few batches instead of stalling one. Records are set aside whatever the table holds: the
// cap never refuses a record or holds up the processor, and never touches applied ones.
// totals.set_aside is the number of rows held (what the list pages through) and
// totals.set_aside_dropped the number dropped for the cap.
//
// HistoryMaxBytes. The writer keeps an estimate of the history table's size on disk
// (totals.history_bytes, updated in the transaction that changes the table): a chunk inserted
// counts for its length, and one appended to (insChunkSQL, rare) or deleted reports its length
// (RETURNING octet_length(data): a chunk appended to by || is TEXT, whose length() stops at a
// zero byte); chunkCost turns a length into the bytes it occupies in the b-tree, its overflow
// pages and the history_by_t_last index. When the estimate is above HistoryMaxBytes, the Apply
// deletes the oldest chunks (by t_last, through history_by_t_last, looked up historyDropGroup at
// a time), one by one until it is not, at most historyDropGroup*historyDropGroups chunks per
// Apply. TestHistorySizeEstimate checks the estimate against what SQLite's dbstat table measures.
// The uncompacted log (history_log, at most two generations of logMax entries) is not counted.

const (
	setAsideDropPerApply = 10_000
	historyDropGroup     = 256
	historyDropGroups    = 16
)

// metrics are the registry's own metrics; Open registers them on Options.Registerer once the
// registry is open.
type metrics struct {
	setAsideHeld, historyBytes      prometheus.Gauge
	setAsideDropped, historyDropped prometheus.Counter
	historyDroppedChunks            prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		setAsideHeld: prometheus.NewGauge(prometheus.GaugeOpts{Name: "coapgw_registry_set_aside_records",
			Help: "Set-aside records held in the registry (at most --max-set-aside)."}),
		setAsideDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgw_registry_set_aside_dropped_total",
			Help: "Oldest set-aside records deleted to keep the table within --max-set-aside."}),
		historyBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "coapgw_registry_history_bytes",
			Help: "Estimated size on disk of the compacted telemetry history (capped by --history-max-bytes)."}),
		historyDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgw_registry_history_size_dropped_total",
			Help: "History entries (records' numeric values) deleted, oldest first, to keep the history within --history-max-bytes."}),
		historyDroppedChunks: prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgw_registry_history_size_dropped_chunks_total",
			Help: "History chunks deleted to keep the history within --history-max-bytes."}),
	}
	return m
}

func (m *metrics) all() []prometheus.Collector {
	return []prometheus.Collector{m.setAsideHeld, m.setAsideDropped, m.historyBytes, m.historyDropped, m.historyDroppedChunks}
}

// register registers the metrics on reg (if not nil); unregister, which Close calls, removes them
// again so that the registry can be opened again with the same Registerer.
func (m *metrics) register(reg prometheus.Registerer) {
	if reg != nil {
		reg.MustRegister(m.all()...)
	}
}

func (m *metrics) unregister(reg prometheus.Registerer) {
	if reg != nil {
		for _, c := range m.all() {
			reg.Unregister(c)
		}
	}
}

// capSetAsides deletes the oldest set-aside records beyond MaxSetAside (see above).
func (a *applyTx) capSetAsides() error {
	excess := a.w.setAsideN + a.setAsides - int64(a.w.opts.MaxSetAside)
	if excess <= 0 {
		return nil
	}
	res, err := a.st.dropSetAsides.ExecContext(a.ctx, min(excess, a.setAsides+setAsideDropPerApply))
	if err != nil {
		return fmt.Errorf("drop set-aside records: %w", err)
	}
	a.setAsideDropped, err = res.RowsAffected()
	return err
}

// putChunk writes one history chunk and counts its size: a plain insert, or when a chunk of the
// thing starting at the same time exists (rare: records with the same received_at), insChunkSQL,
// which appends to it and reports its new length.
func (a *applyTx) putChunk(thing, first, last int64, n int, data []byte) error {
	res, err := a.st.insChunkNew.ExecContext(a.ctx, thing, first, last, n, data)
	if err != nil {
		return err
	}
	if k, err := res.RowsAffected(); err != nil {
		return err
	} else if k == 1 {
		a.histBytes += chunkCost(len(data), a.w.pageSize)
		return nil
	}
	var total int
	if err := a.st.insChunk.QueryRowContext(a.ctx, thing, first, last, n, data).Scan(&total); err != nil {
		return err
	}
	a.histBytes += chunkCost(total, a.w.pageSize)
	if old := total - len(data); old > 0 { // appended to an existing chunk
		a.histBytes -= chunkCost(old, a.w.pageSize)
	}
	return nil
}

// dropChunks runs a DELETE … RETURNING octet_length(data), n on history and counts what it removed.
func (a *applyTx) dropChunks(st *sql.Stmt, args ...any) (chunks, entries int64, err error) {
	err = eachRow(st.QueryContext(a.ctx, args...))(func(rows *sql.Rows) error {
		var l int
		var n int64
		err := rows.Scan(&l, &n)
		a.histBytes -= chunkCost(l, a.w.pageSize)
		chunks++
		entries += n
		return err
	})
	return chunks, entries, err
}

// capHistory deletes the oldest history chunks while the history is over HistoryMaxBytes.
func (a *applyTx) capHistory() error {
	limit := a.w.opts.HistoryMaxBytes
	if limit <= 0 {
		return nil
	}
	type key struct{ thing, first int64 }
	keys := make([]key, 0, historyDropGroup)
	for range historyDropGroups {
		if a.w.histBytes+a.histBytes <= limit {
			return nil
		}
		keys = keys[:0]
		err := eachRow(a.st.selOldest.QueryContext(a.ctx, historyDropGroup))(func(rows *sql.Rows) error {
			var k key
			err := rows.Scan(&k.thing, &k.first)
			keys = append(keys, k)
			return err
		})
		if err != nil {
			return fmt.Errorf("history size cap: %w", err)
		}
		if len(keys) == 0 {
			return nil
		}
		for _, k := range keys {
			if a.w.histBytes+a.histBytes <= limit {
				return nil
			}
			c, n, err := a.dropChunks(a.st.delChunk, k.thing, k.first)
			if err != nil {
				return fmt.Errorf("history size cap: %w", err)
			}
			a.sizeDroppedChunks += c
			a.sizeDropped += n
		}
	}
	return nil
}

// chunkCost estimates the bytes a history row whose data is dataLen bytes takes on disk, with
// pages of pageSize bytes: its cell on a b-tree leaf page (SQLite's rule for how much of a
// payload stays on the page of an index b-tree, which a WITHOUT ROWID table is), the overflow
// pages holding the rest, its entry in history_by_t_last, and leaf pages about two thirds full.
func chunkCost(dataLen, pageSize int) int64 {
	const keyBytes = 32 // record header, thing_id, t_first, t_last, n
	const indexCell = 30
	u := pageSize
	p := dataLen + keyBytes
	maxLocal := (u-12)*64/255 - 23
	minLocal := (u-12)*32/255 - 23
	local, overflow := p, 0
	if p > maxLocal {
		local = minLocal + (p-minLocal)%(u-4)
		if local > maxLocal {
			local = minLocal
		}
		overflow = (p - local + u - 5) / (u - 4)
	}
	cell := local + 2 + 2 // payload size varint, cell pointer
	if overflow > 0 {
		cell += 4
	}
	return int64((cell+indexCell)*3/2 + overflow*u)
}

// migrateBounds is migration 6 (see bounds above): the totals' new columns, the index, and the
// size estimate of the history already stored.
func migrateBounds(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `ALTER TABLE totals ADD COLUMN set_aside_dropped INTEGER NOT NULL DEFAULT 0;
		ALTER TABLE totals ADD COLUMN history_bytes INTEGER NOT NULL DEFAULT 0;
		CREATE INDEX history_by_t_last ON history(t_last);`); err != nil {
		return err
	}
	var pageSize int
	if err := tx.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&pageSize); err != nil {
		return err
	}
	var total int64
	err := eachRow(tx.QueryContext(ctx, `SELECT octet_length(data) FROM history`))(func(rows *sql.Rows) error {
		var l int
		err := rows.Scan(&l)
		total += chunkCost(l, pageSize)
		return err
	})
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE totals SET history_bytes = ? WHERE id = 1`, total)
	return err
}
