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

// StateSize is the size of a thing's reported state as the limits count it.
type StateSize struct {
	Bytes      int // compact JSON (processor.Doc.Size)
	Properties int // values, arrays included (what Options.MaxProperties counts)
}

// WouldBe returns the size of the thing's reported state as committed (before), and as it would
// be with payload, a JSON object received at receivedAt (Unix nanoseconds), merged into it
// (after), as Apply merges it. An unknown thing has an empty state.
func (r *Registry) WouldBe(ctx context.Context, name string, payload []byte, receivedAt int64) (before, after StateSize, err error) {
	var blob []byte
	err = r.rdb.QueryRowContext(ctx, `SELECT shadow FROM things WHERE name = ?`, name).Scan(&blob)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return before, after, fmt.Errorf("state of %s: %w", name, err)
	}
	doc, err := decodeShadow(blob)
	if err != nil {
		return before, after, fmt.Errorf("state of %s: %w", name, err)
	}
	rec, err := processor.DecodeJSON(payload, receivedAt)
	if err != nil {
		return before, after, err
	}
	before = StateSize{doc.Size(), countProperties(doc.Root())}
	doc.Merge(rec)
	return before, StateSize{doc.Size(), countProperties(doc.Root())}, nil
}

// checkLimits returns why a thing's reported state cannot be stored, "" if it can: AWS IoT's
// shadow limits (processor.Doc.CheckLimits) and Options.MaxProperties. The device API refuses
// such records before they are stored; this is the backstop for what it could not know.
func (a *applyTx) checkLimits(d *processor.Doc) string {
	if reason := d.CheckLimits(); reason != "" {
		return reason
	}
	if max := a.w.opts.MaxProperties; max > 0 {
		if n := countProperties(d.Root()); n > max {
			return fmt.Sprintf("thing would have %d properties, over the limit of %d", n, max)
		}
	}
	return ""
}

// countProperties is the number of properties (values, arrays included) under n: what
// Options.MaxProperties counts.
func countProperties(n processor.Node) int {
	if n.Kind() == processor.ValueNode {
		return 1
	}
	c := 0
	for i := range n.Len() {
		c += countProperties(n.Member(i))
	}
	return c
}
