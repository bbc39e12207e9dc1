package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/record"
)

// RetrySelection says which set-aside records to retry: every record with Reason, or the one
// record (GW, Seq) when Reason is "".
type RetrySelection struct {
	Reason string
	GW     string
	Seq    uint64
}

// RetryResult is what became of the records a retry took up.
type RetryResult struct {
	Applied  int64 `json:"applied"`  // applied: no longer set aside
	SetAside int64 `json:"setAside"` // failed again: set aside again, with the new reason
	// Skipped were left as they are: set aside before the registry kept their content format
	// (migration 9), they cannot be decoded again.
	Skipped int64 `json:"skipped"`
	// Things are the things that had a record applied, with their type.
	Things []NamedThing `json:"-"`
}

// retryChunk is how many records one transaction of a retry takes up.
const retryChunk = 500

// RetrySetAsides applies set-aside records again: each goes through the step that set it aside
// (decoded by its content format as the processor decodes, Options.Batch, then applied as Apply
// applies a record), in the order they were set aside, a chunk of records per transaction. In
// the transaction that applies a record, its set-aside row is deleted; one that fails again is
// set aside again in the same transaction, with the new reason and the time of the retry. So a
// record is never applied twice (two retries of one record: the second finds no row) nor lost.
// The high-water marks do not move: a retried record is not a new record. A record applied now
// merges into its thing's shadow by its own received_at, as if it had come in order: a leaf
// written later by a newer record keeps that record's value.
//
// Records set aside before migration 9 have no content format and are skipped. The records set
// aside again by a retry by reason are not retried again by it. ErrNotFound: no record matches.
func (r *Registry) RetrySetAsides(ctx context.Context, sel RetrySelection) (RetryResult, error) {
	var res RetryResult
	where, args := `reason = ?`, []any{sel.Reason}
	if sel.Reason == "" {
		where, args = `gw = ? AND seq = ?`, []any{sel.GW, int64(sel.Seq)}
	}
	var last, found int64
	if err := r.rdb.QueryRowContext(ctx, `SELECT coalesce(max(id), 0), count(*) FROM set_asides WHERE `+where, args...).Scan(&last, &found); err != nil {
		return res, fmt.Errorf("retry set-aside records: %w", err)
	}
	if found == 0 {
		return res, ErrNotFound
	}
	names := map[string]string{}
	for after := int64(0); after < last; {
		n, next, err := r.retryChunk(ctx, where, args, after, last, &res, names)
		if err != nil {
			return res, err
		}
		if n < retryChunk {
			break
		}
		after = next
	}
	for name, typ := range names {
		res.Things = append(res.Things, NamedThing{Name: name, Type: typ})
	}
	return res, nil
}

// retryChunk retries up to retryChunk records of the selection with ids in (after, last]; it
// returns how many rows it read and the last id.
func (r *Registry) retryChunk(ctx context.Context, where string, args []any, after, last int64, res *RetryResult, names map[string]string) (int, int64, error) {
	q := `SELECT id, gw, seq, received_at, type, thing, payload, format FROM set_asides
		WHERE ` + where + ` AND id > ? AND id <= ? ORDER BY id LIMIT ?`
	var ids []int64
	var inputs []processor.Input
	n, next := 0, after
	err := eachRow(r.rdb.QueryContext(ctx, q, append(args, after, last, retryChunk)...))(func(rows *sql.Rows) error {
		var id, seq, recv int64
		var format sql.NullInt64
		var in processor.Input
		rec := &in.Record
		if err := rows.Scan(&id, &rec.GW, &seq, &recv, &rec.Type, &rec.ID, &rec.Payload, &format); err != nil {
			return err
		}
		n, next = n+1, id
		switch {
		case !format.Valid:
			res.Skipped++
			return nil
		case format.Int64 == formatRaw:
			// The whole record, which could not be decoded: decode it again.
			raw := rec.Payload
			in = processor.Input{}
			if err := record.Decode(raw, &in.Record); err != nil {
				in = processor.Input{Raw: raw, Err: err}
			}
		default:
			rec.ContentFormat = uint16(format.Int64)
			rec.ReceivedAt = time.Unix(0, recv).UTC()
		}
		in.Record.Seq = uint64(seq)
		ids = append(ids, id)
		inputs = append(inputs, in)
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("retry set-aside records: %w", err)
	}
	if len(inputs) == 0 {
		return n, next, nil
	}
	b := r.opts.Batch(inputs)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, 0, errClosed
	}
	if r.w.opts == nil {
		return 0, 0, errors.New("registry opened read-only for migration tests")
	}
	out, err := r.w.apply(ctx, r.wdb, b, ids)
	if err != nil {
		return 0, 0, fmt.Errorf("retry set-aside records: %w", err)
	}
	for i, o := range out {
		switch o.Result {
		case processor.Applied:
			res.Applied++
			names[b.Items[i].Record.ID] = b.Items[i].Record.Type
		case processor.SetAside:
			res.SetAside++
		}
	}
	return n, next, nil
}

// takeSetAsides deletes the set-aside row of each record of a retry (applyTx.retry); a record
// whose row is gone (dismissed, or retried by another call meanwhile) is not applied: it comes
// out as Duplicate.
func (a *applyTx) takeSetAsides() error {
	for i, id := range a.retry {
		res, err := a.tx.ExecContext(a.ctx, `DELETE FROM set_asides WHERE id = ?`, id)
		if err != nil {
			return fmt.Errorf("take set-aside record: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("take set-aside record: %w", err)
		} else if n == 0 {
			a.out[i] = processor.Outcome{Result: processor.Duplicate}
			continue
		}
		a.setAsides--
	}
	return nil
}
