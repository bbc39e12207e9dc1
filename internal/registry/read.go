package registry

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coapgw/coapgw/internal/processor"
)

func fromNanos(ns int64) time.Time { return time.Unix(0, ns).UTC() }

// pageSize is the number of rows a page of Things or SetAsides holds for a requested limit:
// 100 if it is 0 or less, at most 1000.
func pageSize(limit int) int {
	if limit <= 0 {
		return 100
	}
	return min(limit, 1000)
}

// ThingTypes returns every thing type, by name.
func (r *Registry) ThingTypes(ctx context.Context) ([]ThingType, error) {
	rows, err := r.rdb.QueryContext(ctx, `SELECT name, things, created_at FROM thing_types ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("thing types: %w", err)
	}
	defer rows.Close()
	var out []ThingType
	for rows.Next() {
		var t ThingType
		var created int64
		if err := rows.Scan(&t.Name, &t.Things, &created); err != nil {
			return nil, fmt.Errorf("thing types: %w", err)
		}
		t.CreatedAt = fromNanos(created)
		out = append(out, t)
	}
	return out, rows.Err()
}

const thingColumns = `t.id, t.seen, t.name, tt.name, t.first_seen, t.last_seen, t.messages, t.version`

// scanThing scans thingColumns: the thing, its id and its seen column.
func scanThing(sc interface{ Scan(...any) error }) (Thing, int64, int64, error) {
	var t Thing
	var id, seen, first, last int64
	if err := sc.Scan(&id, &seen, &t.Name, &t.Type, &first, &last, &t.Messages, &t.Version); err != nil {
		return t, 0, 0, err
	}
	t.FirstSeen, t.LastSeen = fromNanos(first), fromNanos(last)
	return t, id, seen, nil
}

// Thing returns one thing, or ErrNotFound.
func (r *Registry) Thing(ctx context.Context, name string) (Thing, error) {
	row := r.rdb.QueryRowContext(ctx, `SELECT `+thingColumns+` FROM things t JOIN thing_types tt ON tt.id = t.type_id WHERE t.name = ?`, name)
	t, _, _, err := scanThing(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Thing{}, ErrNotFound
	}
	if err != nil {
		return Thing{}, fmt.Errorf("thing %s: %w", name, err)
	}
	return t, nil
}

// Shadow returns the thing's shadow as AWS IoT's GetThingShadow does:
// {"state":{"reported":{…}},"metadata":{"reported":{…}},"version":N,"timestamp":T}, with
// state.desired, state.delta and metadata.desired when it has desired state (desired.go), T being the
// time of the answer in Unix seconds. When every reported property has been deleted, state and
// metadata are empty objects. A thing without a shadow (no record applied yet) or an unknown
// thing gives ErrNotFound.
func (r *Registry) Shadow(ctx context.Context, name string) ([]byte, error) {
	var version int64
	var blob, desired []byte
	err := r.rdb.QueryRowContext(ctx, `SELECT t.version, t.shadow, d.doc FROM things t
		LEFT JOIN desired d ON d.thing_id = t.id WHERE t.name = ?`, name).Scan(&version, &blob, &desired)
	if errors.Is(err, sql.ErrNoRows) || err == nil && version == 0 {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("shadow %s: %w", name, err)
	}
	doc, err := decodeShadow(blob)
	if err != nil {
		return nil, fmt.Errorf("shadow %s: %w", name, err)
	}
	var des *processor.Doc
	if desired != nil {
		if des, err = decodeShadow(desired); err != nil {
			return nil, fmt.Errorf("shadow %s: %w", name, err)
		}
	}
	return renderFullShadow(doc, des, version, r.opts.Now().Unix()), nil
}

func renderShadow(doc *processor.Doc, version, now int64) []byte {
	b := make([]byte, 0, 2*doc.Size()+128)
	if doc.Empty() {
		b = append(b, `{"state":{},"metadata":{}`...)
	} else {
		b = append(b, `{"state":{"reported":`...)
		b = doc.AppendState(b)
		b = append(b, `},"metadata":{"reported":`...)
		b = doc.AppendMetadata(b)
		b = append(b, '}')
	}
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, version, 10)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, now, 10)
	return append(b, '}')
}

// History returns the retained numeric history of a thing: every property (by name) or one, the
// newest q.Limit points of each since q.Since, oldest first. Properties without points in range
// are left out. An unknown thing gives ErrNotFound.
func (r *Registry) History(ctx context.Context, name string, q HistoryQuery) ([]Series, error) {
	var thingID int64
	err := r.rdb.QueryRowContext(ctx, `SELECT id FROM things WHERE name = ?`, name).Scan(&thingID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("history %s: %w", name, err)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 1000
	}
	limit = min(limit, r.opts.HistoryMaxPoints)
	since := r.opts.Now().Add(-r.opts.HistoryMaxAge).UnixNano()
	if !q.Since.IsZero() {
		since = max(since, q.Since.UnixNano())
	}
	only := int64(-1)
	if q.Property != "" {
		err := r.rdb.QueryRowContext(ctx, `SELECT id FROM properties WHERE path = ?`, q.Property).Scan(&only)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("history %s: %w", name, err)
		}
	}
	es, err := r.historyEntries(ctx, thingID, since)
	if err != nil {
		return nil, fmt.Errorf("history %s: %w", name, err)
	}
	// Newest first; at most HistoryMaxPoints entries (records) count, as retention keeps.
	slices.SortFunc(es, func(a, b entry) int { return cmp.Compare(b.t, a.t) })
	byProp := map[int64][]Point{}
	prev, kept := int64(math.MinInt64), 0
	for _, e := range es {
		if e.t == prev { // two records of one thing received in the same nanosecond
			continue
		}
		if prev = e.t; kept == r.opts.HistoryMaxPoints {
			break
		}
		kept++
		eachValue(e.vals, func(id int64, v float64) {
			if only >= 0 && id != only || len(byProp[id]) >= limit {
				return
			}
			byProp[id] = append(byProp[id], Point{T: fromNanos(e.t), V: v})
		})
	}
	out := make([]Series, 0, len(byProp))
	for id, pts := range byProp {
		var path, unit string
		if err := r.rdb.QueryRowContext(ctx, `SELECT path, unit FROM properties WHERE id = ?`, id).Scan(&path, &unit); err != nil {
			return nil, fmt.Errorf("history %s: %w", name, err)
		}
		slices.Reverse(pts)
		out = append(out, Series{Property: path, Unit: unit, Points: pts})
	}
	slices.SortFunc(out, func(a, b Series) int { return strings.Compare(a.Property, b.Property) })
	return out, nil
}

// historyEntries returns a thing's history entries at or after since, from its chunks and the
// writer's tail of the log, read under the tail's lock so that a compaction cannot hide or
// double them.
func (r *Registry) historyEntries(ctx context.Context, thing, since int64) ([]entry, error) {
	tl := &r.w.tail
	tl.mu.RLock()
	defer tl.mu.RUnlock()
	var es []entry
	err := eachRow(r.rdb.QueryContext(ctx, `SELECT t_first, data FROM history WHERE thing_id = ? AND t_last >= ?`, thing, since))(func(rows *sql.Rows) error {
		var first int64
		var data []byte
		if err := rows.Scan(&first, &data); err != nil {
			return err
		}
		var err error
		es, err = decodeChunk(es, thing, first, data)
		return err
	})
	if err != nil {
		return nil, err
	}
	n := len(es)
	es = thingEntries(thingEntries(es, tl.frozen, thing), tl.cur, thing)
	for i := n; i < len(es); i++ {
		es[i].vals = bytes.Clone(es[i].vals) // the tail changes once the lock is released
	}
	return slices.DeleteFunc(es, func(e entry) bool { return e.t < since }), nil
}

// SetAsides returns a page of the records set aside, newest first.
func (r *Registry) SetAsides(ctx context.Context, limit int, cursor string) (SetAsidePage, error) {
	limit = pageSize(limit)
	var page SetAsidePage
	before := int64(1<<63 - 1)
	if cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(cursor)
		s, ok := strings.CutPrefix(string(b), "s1.")
		if err != nil || !ok {
			return page, ErrInvalidCursor
		}
		if before, err = strconv.ParseInt(s, 10, 64); err != nil {
			return page, ErrInvalidCursor
		}
	}
	rows, err := r.rdb.QueryContext(ctx, `SELECT id, gw, seq, received_at, type, thing, reason, payload, at
		FROM set_asides WHERE id < ? ORDER BY id DESC LIMIT ?`, before, limit+1)
	if err != nil {
		return page, fmt.Errorf("set-aside records: %w", err)
	}
	defer rows.Close()
	var lastID int64
	for rows.Next() {
		var s SetAside
		var id, seq, recv, at int64
		var payload []byte
		if err := rows.Scan(&id, &s.GW, &seq, &recv, &s.Type, &s.Thing, &s.Reason, &payload, &at); err != nil {
			return page, fmt.Errorf("set-aside records: %w", err)
		}
		if len(page.Records) == limit {
			page.Next = base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "s1.%d", lastID))
			break
		}
		s.Seq, s.ReceivedAt, s.At = uint64(seq), fromNanos(recv), fromNanos(at)
		if len(payload) > 0 && json.Valid(payload) {
			s.Payload = payload
		} else if len(payload) > 0 {
			s.PayloadB64 = payload
		}
		page.Records = append(page.Records, s)
		lastID = id
	}
	if err := rows.Err(); err != nil {
		return page, fmt.Errorf("set-aside records: %w", err)
	}
	if err := r.rdb.QueryRowContext(ctx, `SELECT set_aside FROM totals WHERE id = 1`).Scan(&page.Total); err != nil {
		return page, fmt.Errorf("set-aside records: %w", err)
	}
	return page, nil
}

// Counts summarises the registry.
func (r *Registry) Counts(ctx context.Context) (Counts, error) {
	var c Counts
	err := r.rdb.QueryRowContext(ctx, `SELECT things, messages, set_aside, set_aside_dropped, (SELECT count(*) FROM thing_types)
		FROM totals WHERE id = 1`).Scan(&c.Things, &c.Messages, &c.SetAside, &c.SetAsideDropped, &c.ThingTypes)
	if err != nil {
		return c, fmt.Errorf("counts: %w", err)
	}
	return c, nil
}
