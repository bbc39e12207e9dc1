package registry

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
)

// History storage (schema version 4).
//
// Every applied record with numeric properties is one history entry: the thing's id, the record's
// received_at and its values, encoded as (uvarint property id, float64 little-endian) pairs. An
// Apply writes all its entries as one row of history_log (one insert per batch, not one per
// record), and the writer keeps the log in memory too, by thing (tail), for readers. When the log
// holds logMax entries it is compacted, a slice of things per batch (see compactionSlices in
// history_write.go): each thing's entries are sorted by time and written as one row in history (a
// chunk: thing_id, t_first, t_last, n, data), or more rows of at most HistoryMaxPoints/4 entries
// each. The history table, clustered by (thing_id, t_first), so gets one insert per thing per
// compaction, and a thing's chunks are a contiguous range of it. Retention deletes whole chunks:
// the oldest ones beyond the newest HistoryMaxPoints entries, and those whose newest entry is older
// than HistoryMaxAge; readers filter what a kept chunk holds beyond the limits.
//
// Encodings. A log row is a sequence of entries:
//
//	varint thing_id, varint t, uvarint len(vals), vals
//
// A chunk is a sequence of entries sorted by t:
//
//	uvarint (t − t_first), uvarint len(vals), vals
//
// Offsets from t_first (not from the previous entry) make two chunks of one thing with the same
// t_first concatenable, which is what an insert does when that key is already taken.

// entry is one history entry; vals aliases the row it was decoded from.
type entry struct {
	thing, t int64
	vals     []byte
}

var errCorruptHistory = errors.New("corrupt history row")

func appendLogEntry(b []byte, thing, t int64, vals []byte) []byte {
	b = binary.AppendVarint(b, thing)
	b = binary.AppendVarint(b, t)
	b = binary.AppendUvarint(b, uint64(len(vals)))
	return append(b, vals...)
}

// decodeLog appends the entries of a log row to es.
func decodeLog(es []entry, data []byte) ([]entry, error) {
	for len(data) > 0 {
		thing, n1 := binary.Varint(data)
		if n1 <= 0 {
			return es, errCorruptHistory
		}
		t, n2 := binary.Varint(data[n1:])
		if n2 <= 0 {
			return es, errCorruptHistory
		}
		l, n3 := binary.Uvarint(data[n1+n2:])
		k := n1 + n2 + n3
		if n3 <= 0 || l > uint64(len(data)-k) {
			return es, errCorruptHistory
		}
		es = append(es, entry{thing: thing, t: t, vals: data[k : k+int(l)]})
		data = data[k+int(l):]
	}
	return es, nil
}

// appendChunk encodes es, sorted by t, all of one thing, as a chunk starting at es[0].t.
func appendChunk(b []byte, es []entry) []byte {
	first := es[0].t
	for _, e := range es {
		b = binary.AppendUvarint(b, uint64(e.t-first))
		b = binary.AppendUvarint(b, uint64(len(e.vals)))
		b = append(b, e.vals...)
	}
	return b
}

// decodeChunk appends the entries of a chunk of thing starting at first to es.
func decodeChunk(es []entry, thing, first int64, data []byte) ([]entry, error) {
	for len(data) > 0 {
		d, n1 := binary.Uvarint(data)
		if n1 <= 0 {
			return es, errCorruptHistory
		}
		l, n2 := binary.Uvarint(data[n1:])
		k := n1 + n2
		if n2 <= 0 || l > uint64(len(data)-k) {
			return es, errCorruptHistory
		}
		es = append(es, entry{thing: thing, t: first + int64(d), vals: data[k : k+int(l)]})
		data = data[k+int(l):]
	}
	return es, nil
}

// eachValue calls fn for each (property id, value) pair of an entry's vals.
func eachValue(vals []byte, fn func(prop int64, v float64)) {
	for len(vals) > 0 {
		id, k := binary.Uvarint(vals)
		if k <= 0 || len(vals) < k+8 {
			return
		}
		fn(int64(id), math.Float64frombits(binary.LittleEndian.Uint64(vals[k:])))
		vals = vals[k+8:]
	}
}

func appendValue(vals []byte, prop int64, v float64) []byte {
	vals = binary.AppendUvarint(vals, uint64(prop))
	return binary.LittleEndian.AppendUint64(vals, math.Float64bits(v))
}

const (
	insChunkSQL = `INSERT INTO history (thing_id, t_first, t_last, n, data) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (thing_id, t_first) DO UPDATE SET t_last = max(t_last, excluded.t_last),
		n = n + excluded.n, data = data || excluded.data`
	chunksForRetention = `SELECT t_first, n FROM history WHERE thing_id = ? ORDER BY t_first DESC`
)

// writeChunks groups es by thing (sorting es by thing, then time) and writes each thing's
// entries as chunks of up to maxPer entries with put (insChunkSQL's parameters). buf is scratch
// space; the grown buffer is returned.
func writeChunks(put func(thing, first, last int64, n int, data []byte) error, es []entry, buf []byte, maxPer int) ([]byte, error) {
	slices.SortStableFunc(es, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.thing, b.thing), cmp.Compare(a.t, b.t))
	})
	for i := 0; i < len(es); {
		j := i + 1
		for j < len(es) && j-i < maxPer && es[j].thing == es[i].thing {
			j++
		}
		g := es[i:j]
		buf = appendChunk(buf[:0], g)
		if err := put(g[0].thing, g[0].t, g[len(g)-1].t, len(g), buf); err != nil {
			return buf, fmt.Errorf("write history chunk: %w", err)
		}
		i = j
	}
	return buf, nil
}

// migrateHistoryChunks is migration 4: the seen column and its indexes, and the history rows of
// samples and recent (one per record) rewritten as one chunk per thing.
func migrateHistoryChunks(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `ALTER TABLE things ADD COLUMN seen INTEGER NOT NULL DEFAULT 0;
		UPDATE things SET seen = last_seen / 1000000000;
		DROP INDEX things_by_last_seen;
		DROP INDEX things_by_type;
		CREATE INDEX things_by_seen ON things(seen);
		CREATE INDEX things_by_type_seen ON things(type_id, seen);
		CREATE TABLE history_log (
			id      INTEGER PRIMARY KEY,
			gen     INTEGER NOT NULL,
			entries INTEGER NOT NULL,
			data    BLOB NOT NULL
		);
		CREATE TABLE history_compacting (
			id     INTEGER PRIMARY KEY CHECK (id = 1),
			gen    INTEGER NOT NULL,
			cursor INTEGER NOT NULL
		);
		CREATE TABLE history (
			thing_id INTEGER NOT NULL,
			t_first  INTEGER NOT NULL,
			t_last   INTEGER NOT NULL,
			n        INTEGER NOT NULL,
			data     BLOB NOT NULL,
			PRIMARY KEY (thing_id, t_first)
		) WITHOUT ROWID;`); err != nil {
		return err
	}
	var es []entry
	err := eachRow(tx.QueryContext(ctx, `SELECT thing_id, t, vals FROM samples UNION ALL SELECT thing_id, t, vals FROM recent`))(func(rows *sql.Rows) error {
		var e entry
		err := rows.Scan(&e.thing, &e.t, &e.vals)
		es = append(es, e)
		return err
	})
	if err != nil {
		return err
	}
	ins, err := tx.PrepareContext(ctx, insChunkSQL)
	if err != nil {
		return err
	}
	defer ins.Close()
	put := func(thing, first, last int64, n int, data []byte) error {
		_, err := ins.ExecContext(ctx, thing, first, last, n, data)
		return err
	}
	if _, err := writeChunks(put, es, nil, 250); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `DROP TABLE samples; DROP TABLE recent;`)
	return err
}

// tail is the history log in memory, by thing, so that a read needs only its thing's entries and
// not a scan of the log rows. It holds two generations: cur, the entries of the log rows being
// written (generation gen), and frozen, those of the previous generation not yet compacted (see
// compaction in history_write.go). Only the writer changes it, holding mu; it reads it without mu.
// A batch's entries are added after its commit; a compaction's commit and the removal of what it
// compacted happen together under mu, and a reader holds mu (shared) while it reads its thing's
// chunks and tail, so it sees each entry exactly once.
type tail struct {
	mu          sync.RWMutex
	cur, frozen map[int64][]byte // a thing's entries, log-encoded without the thing: varint t, uvarint len, vals
	curN        int              // entries in cur
}

// appendEntries appends the entries of a log row of things above after to m and returns how
// many there were; the caller holds mu if readers may be running.
func appendEntries(m map[int64][]byte, log []byte, after int64) (int, error) {
	es, err := decodeLog(nil, log)
	if err != nil {
		return 0, err
	}
	es = slices.DeleteFunc(es, func(e entry) bool { return e.thing <= after })
	for _, e := range es {
		b := binary.AppendVarint(m[e.thing], e.t)
		b = binary.AppendUvarint(b, uint64(len(e.vals)))
		m[e.thing] = append(b, e.vals...)
	}
	return len(es), nil
}

// thingEntries appends the entries of one thing held in m to es (vals alias m's bytes).
func thingEntries(es []entry, m map[int64][]byte, thing int64) []entry {
	b := m[thing]
	for len(b) > 0 {
		t, n1 := binary.Varint(b)
		l, n2 := binary.Uvarint(b[n1:])
		k := n1 + n2
		es = append(es, entry{thing: thing, t: t, vals: b[k : k+int(l)]})
		b = b[k+int(l):]
	}
	return es
}
