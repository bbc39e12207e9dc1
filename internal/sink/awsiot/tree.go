package awsiot

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/coapgw/coapgw/internal/jsonscan"
	"slices"

	"github.com/coapgw/coapgw/internal/processor"
)

// The sink reads a processor document's tree through processor.Node — every leaf with the time
// (Unix ns) it was written, deletions and object floors included — to compute the shadow patch
// (appendPatch) and the stamps it keeps in the shadow (encodeStamps), and builds documents back
// with Doc's setters: the stamps read from a shadow (decodeStamps, a document whose values are
// placeholders) and the document rebuilt from a shadow (rebuild).

// appendPatch appends the members of a JSON merge patch (RFC 7386, the way AWS IoT merges a
// shadow update into reported state) that turns the rendered state of old into that of cur,
// without the enclosing braces; it reports whether it wrote any member. first says whether the
// next member written is the first of its object.
func appendPatch(b []byte, old, cur *processor.Doc, first bool) ([]byte, bool) {
	return appendObjectPatch(b, old.Root(), cur.Root(), first)
}

// appendObjectPatch is appendPatch for the objects old and cur.
func appendObjectPatch(b []byte, old, cur processor.Node, first bool) ([]byte, bool) {
	wrote := false
	emit := func(key string) {
		if !first {
			b = append(b, ',')
		}
		first = false
		wrote = true
		b = jsonscan.AppendQuoted(b, key)
		b = append(b, ':')
	}
	i, j := 0, 0
	for i < old.Len() || j < cur.Len() {
		var o, c processor.Node // the zero Node where a side has no such key: not visible
		if i < old.Len() {
			o = old.Member(i)
		}
		if j < cur.Len() {
			c = cur.Member(j)
		}
		switch {
		case j >= cur.Len() || i < old.Len() && o.Key() < c.Key():
			c = processor.Node{}
			i++
		case i >= old.Len() || c.Key() < o.Key():
			o = processor.Node{}
			j++
		default:
			i++
			j++
		}
		ov, cv := o.Visible(), c.Visible()
		switch {
		case !cv && !ov:
		case !cv:
			emit(o.Key())
			b = append(b, "null"...)
		case !ov:
			emit(c.Key())
			b = c.AppendState(b)
		case c.Kind() == processor.ObjectNode && o.Kind() == processor.ObjectNode:
			mark, wasFirst, wasWrote := len(b), first, wrote
			emit(c.Key())
			b = append(b, '{')
			var below bool
			b, below = appendObjectPatch(b, o, c, true)
			if !below { // nothing changed below: take the key back
				b, first, wrote = b[:mark], wasFirst, wasWrote
				continue
			}
			b = append(b, '}')
		case c.Kind() == processor.ValueNode && o.Kind() == processor.ValueNode && bytes.Equal(c.Value(), o.Value()):
		default:
			emit(c.Key())
			b = c.AppendState(b)
		}
	}
	return b, wrote
}

// Stamps: what coapgw keeps in the shadow next to the properties so that a worker with an empty
// cache can rebuild the exact document (per-leaf received_at in nanoseconds, deletions, object
// floors) from GetThingShadow alone. Encoding, version 1, base64url without padding of:
//
//	varint   base: the newest time in the document
//	node     the root object
//
// node: a kind byte (stampObject, stampValue, stampDeleted), then
//
//	object:  uvarint floor (0 = none, else base−floor+1), uvarint n, n × (uvarint len, key, node)
//	value:   uvarint base−ts
//	deleted: uvarint base−ts
//
// Values are not repeated: they are the shadow's reported state.
const stampsVersion = 1

// The kind bytes of the stamps.
const (
	stampObject  = 0
	stampValue   = 1
	stampDeleted = 2
)

// stampsValue is the value of every value in the document decodeStamps returns: the stamps hold
// only the times; the values are in the shadow's state.
var stampsValue = []byte("0")

// encodeStamps returns the stamps of d.
func encodeStamps(d *processor.Doc) string {
	base := d.Newest()
	b := binary.AppendVarint(nil, base)
	b = appendStamps(b, d.Root(), base)
	return base64.RawURLEncoding.EncodeToString(b)
}

func appendStamps(b []byte, n processor.Node, base int64) []byte {
	switch n.Kind() {
	case processor.ObjectNode:
		b = append(b, stampObject)
		var floor uint64
		if n.Time() != 0 {
			floor = uint64(base-n.Time()) + 1
		}
		b = binary.AppendUvarint(b, floor)
		b = binary.AppendUvarint(b, uint64(n.Len()))
		for i := range n.Len() {
			m := n.Member(i)
			b = binary.AppendUvarint(b, uint64(len(m.Key())))
			b = append(b, m.Key()...)
			b = appendStamps(b, m, base)
		}
		return b
	case processor.ValueNode:
		b = append(b, stampValue)
	default:
		b = append(b, stampDeleted)
	}
	return binary.AppendUvarint(b, uint64(base-n.Time()))
}

var errStamps = errors.New("awsiot: bad stamps")

// decodeStamps returns the stamps as a document: the shadow's shape with its times, deletions and
// floors, every value stampsValue.
func decodeStamps(s string) (*processor.Doc, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, errStamps
	}
	base, k := binary.Varint(b)
	if k <= 0 {
		return nil, errStamps
	}
	b = b[k:]
	if len(b) < 1 || b[0] != stampObject {
		return nil, errStamps
	}
	d := processor.NewDoc()
	rest, err := readStamps(b[1:], d, base, 0)
	if err != nil || len(rest) != 0 {
		return nil, errStamps
	}
	return d, nil
}

// readStamps reads the stamps of an object at depth, after its kind byte, into d.
func readStamps(p []byte, d *processor.Doc, base int64, depth int) ([]byte, error) {
	floor, k := binary.Uvarint(p)
	if k <= 0 {
		return nil, errStamps
	}
	if floor != 0 {
		d.SetFloor(base - int64(floor-1))
	}
	p = p[k:]
	cnt, k := binary.Uvarint(p)
	if k <= 0 || cnt > uint64(len(p)) {
		return nil, errStamps
	}
	p = p[k:]
	var prev string
	for i := range cnt {
		l, k := binary.Uvarint(p)
		if k <= 0 || l > uint64(len(p)-k) {
			return nil, errStamps
		}
		key := string(p[k : k+int(l)])
		if i > 0 && prev >= key {
			return nil, errStamps
		}
		prev = key
		p = p[k+int(l):]
		if len(p) < 1 || depth >= 64 {
			return nil, errStamps
		}
		kind := p[0]
		p = p[1:]
		switch kind {
		case stampObject:
			sub := processor.NewDoc()
			var err error
			if p, err = readStamps(p, sub, base, depth+1); err != nil {
				return nil, err
			}
			d.SetObject(key, sub)
		case stampValue, stampDeleted:
			age, k := binary.Uvarint(p)
			if k <= 0 {
				return nil, errStamps
			}
			p = p[k:]
			if kind == stampDeleted {
				d.SetDeleted(key, base-int64(age))
			} else if err := d.SetValue(key, base-int64(age), stampsValue); err != nil {
				return nil, err
			}
		default:
			return nil, errStamps
		}
	}
	return p, nil
}

// rebuild makes the document of a shadow's reported state (its members, without coapgw's own
// key) from the stamps coapgw wrote with it (nil if none). What the stamps do not explain — a
// property written or deleted by someone else, a shadow without stamps — is taken as written at
// fallback (the shadow's last update time), so that older records do not overwrite it while newer
// ones do.
func rebuild(stamps *processor.Doc, fields map[string]json.RawMessage, fallback int64) (*processor.Doc, error) {
	return rebuildMeta(stamps, fields, nil, fallback, false)
}

// rebuildMeta is rebuild with the shadow's metadata.reported (nil if none): a value the stamps
// do not explain counts as written at its own metadata timestamp (when AWS wrote it), and only
// without one at fallback. stale says the stamps may be older than the state (written for an
// earlier version of the shadow): a stamped value then counts as written at the later of its
// stamp and its metadata timestamp.
func rebuildMeta(stamps *processor.Doc, fields, meta map[string]json.RawMessage, fallback int64, stale bool) (*processor.Doc, error) {
	var st processor.Node // the zero Node, an empty object, stands for no stamps
	if stamps != nil {
		st = stamps.Root()
	}
	// The document is cached: its values, compacted, share one buffer, which they fit in since
	// none is longer than the member it comes from.
	size := 0
	for _, raw := range fields {
		size += len(raw)
	}
	r := rebuilder{fallback: fallback, stale: stale}
	r.vals.Grow(size)
	return r.object(st, fields, meta)
}

type rebuilder struct {
	fallback int64
	stale    bool
	vals     bytes.Buffer // the values of the document
}

// object rebuilds an object from its stamps (an object node) and its members.
func (r *rebuilder) object(stamps processor.Node, fields, meta map[string]json.RawMessage) (*processor.Doc, error) {
	d := processor.NewDoc()
	d.SetFloor(stamps.Time())
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	for i := range stamps.Len() {
		k := stamps.Member(i).Key()
		if _, ok := fields[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	d.Grow(len(keys))
	for _, key := range keys {
		st, stamped := stamps.Find(key)
		raw, ok := fields[key]
		switch {
		case ok && len(raw) > 0 && raw[0] == '{':
			var sub processor.Node
			if stamped && st.Kind() == processor.ObjectNode {
				sub = st
			}
			var sf, sm map[string]json.RawMessage
			if err := json.Unmarshal(raw, &sf); err != nil {
				return nil, fmt.Errorf("awsiot: shadow reported state: %w", err)
			}
			if m, ok := meta[key]; ok && len(m) > 0 && m[0] == '{' {
				_ = json.Unmarshal(m, &sm) // metadata that does not parse: the fallback time
			}
			if err := r.setObject(d, key, sub, sf, sm); err != nil {
				return nil, err
			}
		case ok && string(raw) != "null":
			start := r.vals.Len()
			if err := json.Compact(&r.vals, raw); err != nil {
				return nil, fmt.Errorf("awsiot: shadow reported state: %w", err)
			}
			end := r.vals.Len()
			ts := r.fallback
			if stamped && st.Kind() == processor.ValueNode {
				ts = st.Time()
				if t, ok := metaTime(meta[key]); ok && r.stale && t > ts {
					ts = t
				}
			} else if t, ok := metaTime(meta[key]); ok {
				ts = t
			}
			if err := d.SetValue(key, ts, r.vals.Bytes()[start:end:end]); err != nil {
				return nil, fmt.Errorf("awsiot: shadow reported state: %w", err)
			}
		case !stamped:
		case st.Kind() == processor.DeletedNode:
			d.SetDeleted(key, st.Time())
		case st.Kind() == processor.ObjectNode:
			if err := r.setObject(d, key, st, nil, nil); err != nil {
				return nil, err
			}
		default: // a value coapgw wrote that is gone: deleted by someone else since
			d.SetDeleted(key, max(st.Time(), r.fallback))
		}
	}
	return d, nil
}

// setObject sets d's member key to the object rebuilt from stamps and fields, unless it is an
// empty object: nothing to keep.
func (r *rebuilder) setObject(d *processor.Doc, key string, stamps processor.Node, fields, meta map[string]json.RawMessage) error {
	o, err := r.object(stamps, fields, meta)
	if err != nil {
		return err
	}
	if !o.Empty() || o.Newest() != 0 {
		d.SetObject(key, o)
	}
	return nil
}

// metaTime is the time (Unix ns) in a leaf's metadata, {"timestamp":<Unix seconds>}.
func metaTime(raw json.RawMessage) (int64, bool) {
	if len(raw) == 0 || raw[0] != '{' {
		return 0, false
	}
	var m struct {
		Timestamp int64 `json:"timestamp"`
	}
	if err := json.Unmarshal(raw, &m); err != nil || m.Timestamp <= 0 {
		return 0, false
	}
	return m.Timestamp * 1e9, true
}
