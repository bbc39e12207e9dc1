package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// SetAsideReason is how many set-aside records share one reason, and when the newest was set
// aside.
type SetAsideReason struct {
	Reason string    `json:"reason"`
	Count  int64     `json:"count"`
	Last   time.Time `json:"lastAt"`
}

// SetAsideReasons groups the set-aside records held by reason, the most frequent first (ties:
// the most recent first).
func (r *Registry) SetAsideReasons(ctx context.Context) ([]SetAsideReason, error) {
	var out []SetAsideReason
	err := eachRow(r.rdb.QueryContext(ctx, `SELECT reason, count(*), max(at) FROM set_asides
		GROUP BY reason ORDER BY count(*) DESC, max(at) DESC`))(func(rows *sql.Rows) error {
		var s SetAsideReason
		var at int64
		err := rows.Scan(&s.Reason, &s.Count, &at)
		s.Last = fromNanos(at)
		out = append(out, s)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("set-aside reasons: %w", err)
	}
	return out, nil
}

// DismissSetAsides deletes the set-aside records with the given reason and returns how many it
// deleted (0 when none has it). The totals and coapgw_registry_set_aside_records follow.
func (r *Registry) DismissSetAsides(ctx context.Context, reason string) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errClosed
	}
	if r.w.opts == nil {
		return 0, errors.New("registry opened read-only for migration tests")
	}
	tx, err := r.wdb.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("registry: begin: %w", err)
	}
	defer tx.Rollback() // after Commit, a no-op
	res, err := tx.ExecContext(ctx, `DELETE FROM set_asides WHERE reason = ?`, reason)
	if err != nil {
		return 0, fmt.Errorf("registry: dismiss set-aside records: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil || n == 0 {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE totals SET set_aside = set_aside - ? WHERE id = 1`, n); err != nil {
		return 0, fmt.Errorf("registry: dismiss set-aside records: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("registry: commit: %w", err)
	}
	r.w.setAsideN -= n
	r.w.m.setAsideHeld.Set(float64(r.w.setAsideN))
	return n, nil
}
