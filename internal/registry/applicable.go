package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/coapgw/coapgw/internal/processor"
)

// What the device API reads to refuse, before storing it, a record this registry would set
// aside: a thing that exists with another type, a shadow that would pass its limits.

// NamedThing is a thing's name and type.
type NamedThing struct{ Name, Type string }

// KnownThings returns every thing with its type, in no particular order: what the device API
// loads at start.
func (r *Registry) KnownThings(ctx context.Context) ([]NamedThing, error) {
	rows, err := r.rdb.QueryContext(ctx, `SELECT t.name, tt.name FROM things t JOIN thing_types tt ON tt.id = t.type_id`)
	if err != nil {
		return nil, fmt.Errorf("known things: %w", err)
	}
	defer rows.Close()
	var out []NamedThing
	for rows.Next() {
		var t NamedThing
		if err := rows.Scan(&t.Name, &t.Type); err != nil {
			return nil, fmt.Errorf("known things: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("known things: %w", err)
	}
	return out, nil
}

// ReportedState returns the thing's reported state as committed: an empty document for a thing
// that does not exist (or has no state yet).
func (r *Registry) ReportedState(ctx context.Context, name string) (*processor.Doc, error) {
	var blob []byte
	err := r.rdb.QueryRowContext(ctx, `SELECT shadow FROM things WHERE name = ?`, name).Scan(&blob)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("state of %s: %w", name, err)
	}
	doc, err := decodeShadow(blob)
	if err != nil {
		return nil, fmt.Errorf("state of %s: %w", name, err)
	}
	return doc, nil
}

// checkLimits returns why a thing's reported state cannot be stored, "" if it can: AWS IoT's
// shadow limits (processor.Doc.CheckLimits) and Options.MaxProperties. The device API refuses
// such records before they are stored; this is the backstop for what it could not know.
func (a *applyTx) checkLimits(d *processor.Doc) string {
	if reason := d.CheckLimits(); reason != "" {
		return reason
	}
	if max := a.w.opts.MaxProperties; max > 0 {
		if n := d.Properties(); n > max {
			return fmt.Sprintf("thing would have %d properties, over the limit of %d", n, max)
		}
	}
	return ""
}
