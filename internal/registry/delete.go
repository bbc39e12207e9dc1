package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
)

// DeleteThing removes the thing name and everything the registry keeps for it: its row and
// shadow, its desired state and delta, its history (chunks and its entries in the history log,
// in memory too) and its credential, if any (a live DTLS session with it ends at its next key check). Its thing type
// stays, as AWS IoT keeps a type whose things are deleted; so do the records set aside for it
// (the dashboard's error list is a log). The totals lose the thing and its messages. It returns
// ErrNotFound for an unknown thing.
//
// A record of the thing applied after the deletion creates it again, as new. The gateway's
// device API forgets the name when the HTTP API deletes it (ingest.Handler.ForgetThing: its type
// and its count against --max-things), unless a record of it is still on its way here.
func (r *Registry) DeleteThing(ctx context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errClosed
	}
	if r.w.opts == nil {
		return errors.New("registry opened read-only for migration tests")
	}
	w := &r.w
	tx, err := r.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("registry: begin: %w", err)
	}
	defer tx.Rollback() // after Commit, a no-op
	var id, typeID, messages int64
	err = tx.QueryRowContext(ctx, `SELECT id, type_id, messages FROM things WHERE name = ?`, name).Scan(&id, &typeID, &messages)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("registry: delete %s: %w", name, err)
	}

	// History: the chunks, and the thing's entries in the log rows (else a compaction would
	// write them as chunks of a thing that no longer exists, or of a new thing given its id).
	var histBytes int64
	err = eachRow(tx.QueryContext(ctx, `DELETE FROM history WHERE thing_id = ? RETURNING octet_length(data)`, id))(func(rows *sql.Rows) error {
		var l int
		err := rows.Scan(&l)
		histBytes -= chunkCost(l, w.pageSize)
		return err
	})
	if err != nil {
		return fmt.Errorf("registry: delete %s: history: %w", name, err)
	}
	if err := stripLog(ctx, tx, id); err != nil {
		return fmt.Errorf("registry: delete %s: history log: %w", name, err)
	}

	res, err := tx.ExecContext(ctx, `DELETE FROM credentials WHERE thing_id = ?`, id)
	if err != nil {
		return fmt.Errorf("registry: delete %s: credential: %w", name, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n > 0 {
		if err := r.credChanged(ctx, tx, name); err != nil {
			return err
		}
	}
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`DELETE FROM desired WHERE thing_id = ?`, []any{id}},
		{`DELETE FROM things WHERE id = ?`, []any{id}},
		{`UPDATE thing_types SET things = things - 1 WHERE id = ?`, []any{typeID}},
		{`UPDATE totals SET things = things - 1, messages = messages - ?, history_bytes = history_bytes + ? WHERE id = 1`, []any{messages, histBytes}},
	} {
		if _, err := tx.ExecContext(ctx, q.sql, q.args...); err != nil {
			return fmt.Errorf("registry: delete %s: %w", name, err)
		}
	}

	// The writer's memory moves with the commit, under the tail's lock as a compaction's does,
	// so a reader sees the history either whole or gone.
	tl := &w.tail
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("registry: commit: %w", err)
	}
	tl.curN -= len(thingEntries(nil, tl.cur, id))
	delete(tl.cur, id)
	delete(tl.frozen, id)
	w.frozenIDs = slices.DeleteFunc(w.frozenIDs, func(x int64) bool { return x == id })
	delete(w.things, name)
	delete(w.pending, id)
	if _, ok := w.dl.desired[name]; ok {
		delete(w.dl.desired, name)
		w.setSlot(name, nil, true)
	}
	w.histBytes += histBytes
	w.m.historyBytes.Set(float64(w.histBytes))
	return nil
}

// stripLog rewrites the history log rows that hold entries of thing without them.
func stripLog(ctx context.Context, tx *sql.Tx, thing int64) error {
	type row struct {
		id      int64
		entries int
		data    []byte
	}
	var changed []row
	err := eachRow(tx.QueryContext(ctx, `SELECT id, data FROM history_log`))(func(rows *sql.Rows) error {
		var id int64
		var data []byte
		if err := rows.Scan(&id, &data); err != nil {
			return err
		}
		es, err := decodeLog(nil, data)
		if err != nil {
			return fmt.Errorf("log row %d: %w", id, err)
		}
		kept := slices.DeleteFunc(es, func(e entry) bool { return e.thing == thing })
		if len(kept) == len(es) {
			return nil
		}
		b := []byte{} // not nil: data is NOT NULL
		for _, e := range kept {
			b = appendLogEntry(b, e.thing, e.t, e.vals)
		}
		changed = append(changed, row{id, len(kept), b})
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range changed {
		if _, err := tx.ExecContext(ctx, `UPDATE history_log SET entries = ?, data = ? WHERE id = ?`, c.entries, c.data, c.id); err != nil {
			return err
		}
	}
	return nil
}
