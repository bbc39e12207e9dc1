package registry

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/coapgw/coapgw/internal/jsonscan"
	"github.com/coapgw/coapgw/internal/processor"
)

// Desired state (downlink), with AWS IoT's semantics: UpdateDesired merges a state.desired
// object into the thing's desired state (a JSON null deletes a property, nested ones too;
// "desired": null deletes the whole section), the shadow's version increases by one for every
// update, and metadata.desired holds {"timestamp": <Unix s>} per leaf. The delta is what AWS
// computes: the desired properties whose value differs from the reported one, recursively for
// objects (a desired object against a reported value, or a missing one, is in the delta whole),
// arrays compared whole; a thing without desired state has no delta. A report that matches the
// desired values clears them from the delta; the desired state itself stays, as in AWS.
//
// The delta of every thing with desired state is kept rendered in memory for the device API
// (Delta), which reads it on the telemetry path without a lock shared by the workers: one atomic
// load of a map that changes only when a thing first gets desired state or loses it, and one of
// the thing's slot, which UpdateDesired and Apply replace.

// ErrVersionConflict is returned by UpdateDesired when the request names a version that is not
// the shadow's (AWS answers 409).
var ErrVersionConflict = errors.New("version conflict")

// DesiredError is a state document UpdateDesired refuses (AWS answers 400).
type DesiredError struct{ Reason string }

func (e *DesiredError) Error() string { return e.Reason }

// downlink is the registry's desired state in memory: the desired documents (guarded by
// Registry.mu, written with the writer) and the rendered deltas the device API reads.
type downlink struct {
	desired map[string]*processor.Doc
	slots   atomic.Pointer[map[string]*deltaSlot] // copied on write; read without a lock
}

// deltaSlot holds a thing's rendered delta message, nil when it has none.
type deltaSlot struct{ msg atomic.Pointer[[]byte] }

// Delta returns the pending change of the thing named name as the device gets it,
// {"state":{<delta>},"version":N}, or nil when it has none. It does not allocate; the bytes
// must not be modified. Safe for concurrent use with everything else.
func (r *Registry) Delta(name []byte) []byte {
	m := r.w.dl.slots.Load()
	if m == nil || len(*m) == 0 {
		return nil
	}
	s := (*m)[string(name)]
	if s == nil {
		return nil
	}
	if p := s.msg.Load(); p != nil {
		return *p
	}
	return nil
}

// loadDesired reads every thing's desired state and computes the deltas, at Open.
func (w *writer) loadDesired(ctx context.Context, db *sql.DB) error {
	w.dl.desired = map[string]*processor.Doc{}
	slots := map[string]*deltaSlot{}
	err := eachRow(db.QueryContext(ctx, `SELECT t.name, t.version, t.shadow, d.doc FROM desired d JOIN things t ON t.id = d.thing_id`))(func(rows *sql.Rows) error {
		var name string
		var version int64
		var shadow, blob []byte
		if err := rows.Scan(&name, &version, &shadow, &blob); err != nil {
			return err
		}
		rep, err := decodeShadow(shadow)
		if err != nil {
			return fmt.Errorf("shadow of %s: %w", name, err)
		}
		des, err := decodeShadow(blob)
		if err != nil {
			return fmt.Errorf("desired state of %s: %w", name, err)
		}
		w.dl.desired[name] = des
		s := &deltaSlot{}
		s.set(deltaMessage(nil, des, rep, version))
		slots[name] = s
		return nil
	})
	w.dl.slots.Store(&slots)
	return err
}

func (s *deltaSlot) set(msg []byte) {
	if msg == nil {
		s.msg.Store(nil)
		return
	}
	s.msg.Store(&msg)
}

// refreshDeltas recomputes the deltas of the things an Apply changed that have desired state.
func (w *writer) refreshDeltas(names []string) {
	if len(w.dl.desired) == 0 {
		return
	}
	m := *w.dl.slots.Load()
	for _, name := range names {
		des := w.dl.desired[name]
		th := w.things[name]
		if des == nil || th == nil {
			continue
		}
		if s := m[name]; s != nil {
			msg := deltaMessage(nil, des, th.doc, th.version)
			old := s.msg.Load()
			s.set(msg)
			if w.opts.OnDelta != nil && ((old == nil) != (msg == nil) || old != nil && msg != nil && !sameDelta(*old, msg)) {
				w.opts.OnDelta(name)
			}
		}
	}
}

// setSlot publishes a thing's delta, adding the thing to (or, with remove, taking it from) the
// map of things with desired state.
func (w *writer) setSlot(name string, msg []byte, remove bool) {
	old := *w.dl.slots.Load()
	if s := old[name]; s != nil && !remove {
		s.set(msg)
		return
	}
	m := make(map[string]*deltaSlot, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	if remove {
		delete(m, name)
	} else {
		s := &deltaSlot{}
		s.set(msg)
		m[name] = s
	}
	w.dl.slots.Store(&m)
}

// desiredRequest is the body UpdateDesired takes: AWS's request state document.
type desiredRequest struct {
	State *struct {
		Desired  json.RawMessage `json:"desired"`
		Reported json.RawMessage `json:"reported"`
	} `json:"state"`
	Version     *int64          `json:"version"`
	ClientToken json.RawMessage `json:"clientToken"`
}

// UpdateDesired applies an AWS update request, {"state":{"desired":{…}}} with an optional
// "version" that must be the shadow's, to the desired state of an existing thing, and returns
// the shadow as Shadow renders it afterwards. A thing that does not exist gives ErrNotFound; a
// version that is not the shadow's ErrVersionConflict; a body that is not such a document, sets
// state.reported (the device reports) or would pass the shadow limits (8 KB, 6 levels)
// *DesiredError.
func (r *Registry) UpdateDesired(ctx context.Context, name string, body []byte) ([]byte, error) {
	var req desiredRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		return nil, &DesiredError{Reason: "body must be {\"state\":{\"desired\":{...}}}"}
	}
	if req.State == nil || len(req.State.Desired) == 0 {
		return nil, &DesiredError{Reason: "state.desired is missing"}
	}
	if len(req.State.Reported) != 0 {
		return nil, &DesiredError{Reason: "state.reported is the device's: only state.desired can be set here"}
	}
	now := r.opts.Now()
	deleteAll := string(req.State.Desired) == "null"
	if !deleteAll {
		if _, err := processor.DecodeJSON(req.State.Desired, 1); err != nil {
			return nil, &DesiredError{Reason: "state.desired: " + err.Error()}
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errClosed
	}
	if r.w.opts == nil {
		return nil, errors.New("registry opened read-only for migration tests")
	}
	w := &r.w
	tx, err := r.wdb.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("update desired %s: %w", name, err)
	}
	defer tx.Rollback()
	var id, version int64
	var shadow []byte
	err = tx.QueryRowContext(ctx, `SELECT id, version, shadow FROM things WHERE name = ?`, name).Scan(&id, &version, &shadow)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("update desired %s: %w", name, err)
	}
	if req.Version != nil && *req.Version != version {
		return nil, ErrVersionConflict
	}
	des := w.dl.desired[name]
	if deleteAll {
		des = nil
	} else {
		if des == nil {
			des = processor.NewDoc()
		} else {
			des = des.Clone()
		}
		// The last update wins, even if the clock went back since the one before.
		patch, err := processor.DecodeJSON(req.State.Desired, max(now.UnixNano(), des.Newest()+1))
		if err != nil {
			return nil, &DesiredError{Reason: "state.desired: " + err.Error()}
		}
		des.Merge(patch)
		if reason := des.CheckLimits(); reason != "" {
			return nil, &DesiredError{Reason: "desired state: " + reason}
		}
	}
	version++
	if _, err := tx.ExecContext(ctx, `UPDATE things SET version = ? WHERE id = ?`, version, id); err != nil {
		return nil, fmt.Errorf("update desired %s: %w", name, err)
	}
	if des == nil {
		_, err = tx.ExecContext(ctx, `DELETE FROM desired WHERE thing_id = ?`, id)
	} else {
		_, err = tx.ExecContext(ctx, `INSERT INTO desired (thing_id, doc) VALUES (?, ?)
			ON CONFLICT (thing_id) DO UPDATE SET doc = excluded.doc`, id, des.AppendBinary(nil))
	}
	if err != nil {
		return nil, fmt.Errorf("update desired %s: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("update desired %s: %w", name, err)
	}
	if th := w.things[name]; th != nil {
		th.version = version
	}
	rep, err := decodeShadow(shadow)
	if err != nil {
		return nil, fmt.Errorf("update desired %s: %w", name, err)
	}
	if des == nil {
		delete(w.dl.desired, name)
		w.setSlot(name, nil, true)
	} else {
		w.dl.desired[name] = des
		w.setSlot(name, deltaMessage(nil, des, rep, version), false)
	}
	if r.opts.OnDelta != nil {
		r.opts.OnDelta(name)
	}
	return renderFullShadow(rep, des, version, now.Unix()), nil
}

// sameDelta reports whether two delta messages hold the same state (whatever their versions).
func sameDelta(a, b []byte) bool {
	cut := func(m []byte) []byte {
		if i := bytes.LastIndex(m, []byte(`,"version":`)); i >= 0 {
			return m[:i]
		}
		return m
	}
	return bytes.Equal(cut(a), cut(b))
}

// deltaMessage renders what the device gets, {"state":{<delta>},"version":N}, nil when there is
// no delta.
func deltaMessage(b []byte, des, rep *processor.Doc, version int64) []byte {
	start := len(b)
	b = append(b, `{"state":`...)
	at := len(b)
	b = appendDelta(b, des.Root(), rep.Root())
	if len(b) == at {
		return nil
	}
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, version, 10)
	b = append(b, '}')
	return b[start:]
}

// appendDelta appends the members of the desired object d that the reported object r does not
// match, as an object, or nothing when every one matches.
func appendDelta(b []byte, d, r processor.Node) []byte {
	start := len(b)
	b = append(b, '{')
	n := 0
	for i := 0; i < d.Len(); i++ {
		m := d.Member(i)
		if !m.Visible() {
			continue
		}
		rm, ok := r.Find(m.Key())
		reported := ok && rm.Visible()
		mark := len(b)
		if n > 0 {
			b = append(b, ',')
		}
		b = jsonscan.AppendQuoted(b, m.Key())
		b = append(b, ':')
		switch {
		case m.Kind() == processor.ObjectNode && reported && rm.Kind() == processor.ObjectNode:
			at := len(b)
			if b = appendDelta(b, m, rm); len(b) == at {
				b = b[:mark]
				continue
			}
		case m.Kind() == processor.ValueNode && reported && rm.Kind() == processor.ValueNode && sameValue(m.Value(), rm.Value()):
			b = b[:mark]
			continue
		default:
			b = m.AppendState(b)
		}
		n++
	}
	if n == 0 {
		return b[:start]
	}
	return append(b, '}')
}

// sameValue reports whether two compact JSON values are equal: byte for byte, or as numbers
// (1 and 1.0).
func sameValue(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	if !isNumber(a) || !isNumber(b) {
		return false
	}
	x, err1 := strconv.ParseFloat(string(a), 64)
	y, err2 := strconv.ParseFloat(string(b), 64)
	return err1 == nil && err2 == nil && x == y
}

func isNumber(v []byte) bool { return len(v) > 0 && (v[0] == '-' || v[0] >= '0' && v[0] <= '9') }

// renderFullShadow is GetThingShadow's document with the desired state (des may be nil):
// {"state":{"desired":…,"reported":…,"delta":…},"metadata":{"desired":…,"reported":…},
// "version":N,"timestamp":T}, each section present only when it is not empty.
func renderFullShadow(rep, des *processor.Doc, version, now int64) []byte {
	if des == nil || des.Empty() {
		return renderShadow(rep, version, now)
	}
	b := make([]byte, 0, 2*(rep.Size()+des.Size())+192)
	b = append(b, `{"state":{"desired":`...)
	b = des.AppendState(b)
	if !rep.Empty() {
		b = append(b, `,"reported":`...)
		b = rep.AppendState(b)
	}
	at := len(b)
	b = append(b, `,"delta":`...)
	if d := appendDelta(b, des.Root(), rep.Root()); len(d) > len(b) {
		b = d
	} else {
		b = b[:at]
	}
	b = append(b, `},"metadata":{"desired":`...)
	b = des.AppendMetadata(b)
	if !rep.Empty() {
		b = append(b, `,"reported":`...)
		b = rep.AppendMetadata(b)
	}
	b = append(b, `},"version":`...)
	b = strconv.AppendInt(b, version, 10)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, now, 10)
	return append(b, '}')
}
