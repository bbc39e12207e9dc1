package registry

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/coapgw/coapgw/internal/processor"
)

// ErrInvalidQuery is wrapped by the error of Things for a Sort or Order it does not know.
var ErrInvalidQuery = errors.New("invalid query")

// listSort is how one sort of the things list walks its index: by a numeric column and the id,
// by name, or by type name and name.
type listSort struct {
	col string // numeric column ("t.seen"); "" for name and type
}

var listSorts = map[string]listSort{
	SortLastSeen:  {col: "t.seen"},
	SortFirstSeen: {col: "t.first_seen"},
	SortMessages:  {col: "t.counted"},
	SortName:      {},
	SortType:      {},
}

// Things returns a page of things in the order q asks (by default most recently seen first to
// the second; within one second of last_seen, most recently created first). Paging is by keyset
// on an index of the sort (migrations 4 and 9), so every page costs the same however deep; a
// thing that moves in the order between two pages (seen again) may be skipped or repeated, never
// a page is wrong. SortMessages orders by the counted column, the count written when the
// second of last_seen changes or the count grew by more than 16 and a sixteenth (things.go), so that its
// index does not change with every record; Messages shows the exact count. A Sort or Order it does not know wraps ErrInvalidQuery,
// a cursor of another sort or order is ErrInvalidCursor.
func (r *Registry) Things(ctx context.Context, q ThingQuery) (ThingPage, error) {
	limit := pageSize(q.Limit)
	var page ThingPage
	if q.Sort == "" {
		q.Sort = SortLastSeen
	}
	ls, ok := listSorts[q.Sort]
	if !ok {
		return page, fmt.Errorf("%w: sort %q (want one of %s)", ErrInvalidQuery, q.Sort, strings.Join(ThingSorts, ", "))
	}
	if q.Order == "" {
		q.Order = DefaultOrder(q.Sort)
	}
	if q.Order != OrderAsc && q.Order != OrderDesc {
		return page, fmt.Errorf("%w: order %q (want %s or %s)", ErrInvalidQuery, q.Order, OrderAsc, OrderDesc)
	}
	if q.Latest < 0 || q.Latest > MaxLatest {
		return page, fmt.Errorf("%w: latest %d (want 0 to %d)", ErrInvalidQuery, q.Latest, MaxLatest)
	}
	var typeID int64
	if q.Type != "" {
		err := r.rdb.QueryRowContext(ctx, `SELECT id, things FROM thing_types WHERE name = ?`, q.Type).Scan(&typeID, &page.Total)
		if errors.Is(err, sql.ErrNoRows) {
			return page, nil
		}
		if err != nil {
			return page, fmt.Errorf("things: %w", err)
		}
	}
	var after []any
	if q.Cursor != "" {
		var err error
		if after, err = decodeListCursor(q.Cursor, q.Sort, q.Order); err != nil {
			return page, err
		}
	}
	query, args := listQuery(q, typeID, after, limit+1)
	rows, err := r.rdb.QueryContext(ctx, query, args...)
	if err != nil {
		return page, fmt.Errorf("things: %w", err)
	}
	defer rows.Close()
	var last []any // the keyset of the last row of the page
	var blobs [][]byte
	for rows.Next() {
		var t Thing
		var id, seen, first, lastSeen, key int64
		var blob []byte
		dest := []any{&id, &seen, &t.Name, &t.Type, &first, &lastSeen, &t.Messages, &t.Version, &key}
		if q.Latest > 0 {
			dest = append(dest, &blob)
		}
		if err := rows.Scan(dest...); err != nil {
			return page, fmt.Errorf("things: %w", err)
		}
		if len(page.Things) == limit {
			page.Next = encodeListCursor(q.Sort, q.Order, last)
			break
		}
		t.FirstSeen, t.LastSeen = fromNanos(first), fromNanos(lastSeen)
		page.Things = append(page.Things, t)
		blobs = append(blobs, blob)
		switch {
		case ls.col != "":
			last = []any{key, id}
		case q.Sort == SortType:
			last = []any{t.Type, t.Name}
		default:
			last = []any{t.Name}
		}
	}
	if err := rows.Err(); err != nil {
		return page, fmt.Errorf("things: %w", err)
	}
	rows.Close()
	if q.Latest > 0 {
		if err := r.latest(ctx, page.Things, blobs, q.Latest); err != nil {
			return page, fmt.Errorf("things: %w", err)
		}
	}
	switch {
	case q.Prefix != "":
		conds, args := listFilter(q, typeID)
		err = r.rdb.QueryRowContext(ctx, `SELECT count(*) FROM things t WHERE `+strings.Join(conds, " AND "), args...).Scan(&page.Total)
	case q.Type == "":
		err = r.rdb.QueryRowContext(ctx, `SELECT things FROM totals WHERE id = 1`).Scan(&page.Total)
	}
	if err != nil {
		return page, fmt.Errorf("things: count: %w", err)
	}
	return page, nil
}

// listFilter is the WHERE conditions of q's type (typeID) and prefix filters, and their arguments.
func listFilter(q ThingQuery, typeID int64) ([]string, []any) {
	var where []string
	var args []any
	if q.Type != "" {
		where = append(where, "t.type_id = ?")
		args = append(args, typeID)
	}
	if q.Prefix != "" {
		where = append(where, "t.name >= ? AND t.name < ?")
		args = append(args, q.Prefix, q.Prefix+"\xff")
	}
	return where, args
}

// listKeys is the columns of the keyset of q's sort, in order.
func listKeys(q ThingQuery) string {
	switch {
	case listSorts[q.Sort].col != "":
		return listSorts[q.Sort].col + ", t.id"
	case q.Sort == SortType:
		return "tt.name, t.name"
	}
	return "t.name"
}

// listQuery is the query of a page of at most limit things of q (Sort and Order set and valid;
// typeID the id of q.Type) after the keyset values after (nil: from the start).
func listQuery(q ThingQuery, typeID int64, after []any, limit int) (string, []any) {
	where, args := listFilter(q, typeID)
	cmpOp, dir := ">", "ASC"
	if q.Order == OrderDesc {
		cmpOp, dir = "<", "DESC"
	}
	keys := listKeys(q)
	if after != nil {
		where = append(where, "("+keys+") "+cmpOp+" ("+strings.Repeat("?, ", len(after)-1)+"?)")
		args = append(args, after...)
	}
	cols := thingColumns + `, ` + cmp.Or(listSorts[q.Sort].col, "0")
	if q.Latest > 0 {
		cols += ", t.shadow"
	}
	from := ` FROM things t JOIN thing_types tt ON tt.id = t.type_id`
	if q.Sort == SortType {
		// The types by name, the outer loop (CROSS JOIN keeps SQLite from reordering), then
		// each type's things by (type_id, name): the order without a sort.
		from = ` FROM thing_types tt CROSS JOIN things t ON tt.id = t.type_id`
	}
	query := `SELECT ` + cols + from
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += ` ORDER BY ` + strings.ReplaceAll(keys, ",", " "+dir+",") + " " + dir + ` LIMIT ?`
	return query, append(args, limit)
}

// A list cursor is "t3.<sort>.<order>.<keyset values>" in base64url: the values are integers
// (a numeric column and the id) or names, which never contain a dot.
func encodeListCursor(sort, order string, vals []any) string {
	b := fmt.Appendf(nil, "t3.%s.%s", sort, order)
	for _, v := range vals {
		b = fmt.Appendf(b, ".%v", v)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeListCursor(c, sort, order string) ([]any, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return nil, ErrInvalidCursor
	}
	parts := strings.Split(string(b), ".")
	if len(parts) < 4 || parts[0] != "t3" || parts[1] != sort || parts[2] != order {
		return nil, ErrInvalidCursor
	}
	parts = parts[3:]
	switch {
	case listSorts[sort].col != "":
		if len(parts) != 2 {
			return nil, ErrInvalidCursor
		}
		key, err1 := strconv.ParseInt(parts[0], 10, 64)
		id, err2 := strconv.ParseInt(parts[1], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, ErrInvalidCursor
		}
		return []any{key, id}, nil
	case sort == SortType && len(parts) == 2 || sort == SortName && len(parts) == 1:
		vals := make([]any, len(parts))
		for i, p := range parts {
			vals[i] = p
		}
		return vals, nil
	}
	return nil, ErrInvalidCursor
}

// maxLatestValue bounds the JSON of a value in Thing.Latest: a longer string is left out.
const maxLatestValue = 64

// latest fills each thing's Latest from its shadow (blobs[i] is things[i]'s): its n most
// recently reported scalar values, by property path, with their units.
func (r *Registry) latest(ctx context.Context, things []Thing, blobs [][]byte, n int) error {
	units := map[string]string{}
	err := eachRow(r.rdb.QueryContext(ctx, `SELECT path, unit FROM properties WHERE unit != ''`))(func(rows *sql.Rows) error {
		var path, unit string
		err := rows.Scan(&path, &unit)
		units[path] = unit
		return err
	})
	if err != nil {
		return err
	}
	var vals []Value
	for i, blob := range blobs {
		if blob == nil {
			continue
		}
		doc, err := decodeShadow(blob)
		if err != nil {
			return fmt.Errorf("thing %s: %w", things[i].Name, err)
		}
		vals = scalarValues(vals[:0], doc.Root(), "")
		slices.SortFunc(vals, func(a, b Value) int {
			return cmp.Or(b.T.Compare(a.T), strings.Compare(a.Property, b.Property))
		})
		vals = vals[:min(n, len(vals))]
		out := slices.Clone(vals)
		for j := range out {
			out[j].Unit = units[out[j].Property]
		}
		slices.SortFunc(out, func(a, b Value) int { return strings.Compare(a.Property, b.Property) })
		things[i].Latest = out
	}
	return nil
}

// scalarValues appends the visible scalar values under node n (path: its path, "" for the root).
func scalarValues(vals []Value, n processor.Node, path string) []Value {
	for i := range n.Len() {
		m := n.Member(i)
		p := m.Key()
		if path != "" {
			p = path + "." + p
		}
		switch m.Kind() {
		case processor.ObjectNode:
			vals = scalarValues(vals, m, p)
		case processor.ValueNode:
			if v := m.Value(); len(v) <= maxLatestValue && v[0] != '[' {
				vals = append(vals, Value{Property: p, Value: v, T: fromNanos(m.Time())})
			}
		}
	}
	return vals
}
