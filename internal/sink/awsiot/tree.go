package awsiot

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/coapgw/coapgw/internal/processor"
)

// tree is a processor.Doc opened up: the same object tree, every leaf with the time (Unix ns) it
// was written, deletions and object floors included. It is read from and written to the Doc's
// binary encoding (processor.Doc.AppendBinary / UnmarshalBinary, version 1, the encoding the
// local registry stores), which is the only way the processor exposes per-leaf nanosecond times.
// The sink needs them to compute the shadow patch and the stamps it keeps in the shadow.
type tree struct {
	kind  byte // kindObject, kindValue, kindDeleted (the processor's numbering)
	depth uint8
	ts    int64
	val   []byte
	kids  []member
}

type member struct {
	key string
	tree
}

const (
	kindObject  = 0
	kindValue   = 1
	kindDeleted = 2

	docBinaryVersion = 1
)

var errDocEncoding = errors.New("awsiot: unexpected processor document encoding")

// openDoc returns d's tree.
func openDoc(d *processor.Doc) (*tree, error) {
	b := d.AppendBinary(nil)
	if len(b) < 1 || b[0] != docBinaryVersion {
		return nil, errDocEncoding
	}
	t := &tree{}
	rest, err := readTree(b[1:], t, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 || t.kind != kindObject {
		return nil, errDocEncoding
	}
	return t, nil
}

func readTree(p []byte, n *tree, depth int) ([]byte, error) {
	if len(p) < 1 || depth > 64 {
		return nil, errDocEncoding
	}
	n.kind = p[0]
	ts, k := binary.Varint(p[1:])
	if k <= 0 {
		return nil, errDocEncoding
	}
	n.ts = ts
	p = p[1+k:]
	switch n.kind {
	case kindValue:
		if len(p) < 1 {
			return nil, errDocEncoding
		}
		n.depth = p[0]
		l, k := binary.Uvarint(p[1:])
		if k <= 0 || l == 0 || l > uint64(len(p)-1-k) {
			return nil, errDocEncoding
		}
		n.val = p[1+k : 1+k+int(l) : 1+k+int(l)]
		return p[1+k+int(l):], nil
	case kindDeleted:
		return p, nil
	case kindObject:
		cnt, k := binary.Uvarint(p)
		if k <= 0 || cnt > uint64(len(p)) {
			return nil, errDocEncoding
		}
		p = p[k:]
		n.kids = make([]member, cnt)
		for i := range n.kids {
			l, k := binary.Uvarint(p)
			if k <= 0 || l > uint64(len(p)-k) {
				return nil, errDocEncoding
			}
			n.kids[i].key = string(p[k : k+int(l)])
			var err error
			if p, err = readTree(p[k+int(l):], &n.kids[i].tree, depth+1); err != nil {
				return nil, err
			}
		}
		return p, nil
	}
	return nil, errDocEncoding
}

// doc returns the processor document of t.
func (t *tree) doc() (*processor.Doc, error) {
	b := appendTree([]byte{docBinaryVersion}, t)
	d := processor.NewDoc()
	if err := d.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("awsiot: rebuild document: %w", err)
	}
	return d, nil
}

func appendTree(b []byte, n *tree) []byte {
	b = append(b, n.kind)
	b = binary.AppendVarint(b, n.ts)
	switch n.kind {
	case kindValue:
		b = append(b, n.depth)
		b = binary.AppendUvarint(b, uint64(len(n.val)))
		b = append(b, n.val...)
	case kindObject:
		b = binary.AppendUvarint(b, uint64(len(n.kids)))
		for i := range n.kids {
			b = binary.AppendUvarint(b, uint64(len(n.kids[i].key)))
			b = append(b, n.kids[i].key...)
			b = appendTree(b, &n.kids[i].tree)
		}
	}
	return b
}

// visible reports whether n shows in the rendered state (the processor's rule).
func (n *tree) visible() bool {
	switch n.kind {
	case kindValue:
		return true
	case kindObject:
		for i := range n.kids {
			if n.kids[i].visible() {
				return true
			}
		}
	}
	return false
}

// find returns the kid with key, or nil.
func (n *tree) find(key string) *tree {
	i, ok := slices.BinarySearchFunc(n.kids, key, func(m member, k string) int { return strings.Compare(m.key, k) })
	if !ok {
		return nil
	}
	return &n.kids[i].tree
}

// maxTS is the newest time anywhere in n.
func (n *tree) maxTS() int64 {
	t := n.ts
	for i := range n.kids {
		t = max(t, n.kids[i].maxTS())
	}
	return t
}

// appendState appends n rendered as compact JSON, as processor.Doc.AppendState does.
func appendState(b []byte, n *tree) []byte {
	if n.kind == kindValue {
		return append(b, n.val...)
	}
	b = append(b, '{')
	first := true
	for i := range n.kids {
		m := &n.kids[i]
		if !m.visible() {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendQuoted(b, m.key)
		b = append(b, ':')
		b = appendState(b, &m.tree)
	}
	return append(b, '}')
}

// appendPatch appends the members of a JSON merge patch (RFC 7386, the way AWS IoT merges a
// shadow update into reported state) that turns the rendered state of the object old into that
// of the object cur, without the enclosing braces; it reports whether it wrote any member. first
// says whether the next member written is the first of its object.
func appendPatch(b []byte, old, cur *tree, first bool) ([]byte, bool) {
	wrote := false
	emit := func(key string) {
		if !first {
			b = append(b, ',')
		}
		first = false
		wrote = true
		b = appendQuoted(b, key)
		b = append(b, ':')
	}
	i, j := 0, 0
	for i < len(old.kids) || j < len(cur.kids) {
		var o, c *member
		switch {
		case j >= len(cur.kids) || i < len(old.kids) && old.kids[i].key < cur.kids[j].key:
			o = &old.kids[i]
			i++
		case i >= len(old.kids) || cur.kids[j].key < old.kids[i].key:
			c = &cur.kids[j]
			j++
		default:
			o, c = &old.kids[i], &cur.kids[j]
			i++
			j++
		}
		ov, cv := o != nil && o.visible(), c != nil && c.visible()
		switch {
		case !cv && !ov:
		case !cv:
			emit(o.key)
			b = append(b, "null"...)
		case !ov:
			emit(c.key)
			b = appendState(b, &c.tree)
		case c.kind == kindObject && o.kind == kindObject:
			mark, wasFirst, wasWrote := len(b), first, wrote
			emit(c.key)
			b = append(b, '{')
			var any bool
			b, any = appendPatch(b, &o.tree, &c.tree, true)
			if !any { // nothing changed below: take the key back
				b, first, wrote = b[:mark], wasFirst, wasWrote
				continue
			}
			b = append(b, '}')
		case c.kind == kindValue && o.kind == kindValue && bytes.Equal(c.val, o.val):
		default:
			emit(c.key)
			b = appendState(b, &c.tree)
		}
	}
	return b, wrote
}

// appendQuoted appends s as a JSON string.
func appendQuoted(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Stamps: what coapgw keeps in the shadow next to the properties so that a worker with an empty
// cache can rebuild the exact document (per-leaf received_at in nanoseconds, deletions, object
// floors) from GetThingShadow alone. Encoding, version 1, base64url without padding of:
//
//	varint   base: the newest time in the document
//	node     the root object
//
// node: a kind byte, then
//
//	object:  uvarint floor (0 = none, else base−floor+1), uvarint n, n × (uvarint len, key, node)
//	value:   uvarint base−ts
//	deleted: uvarint base−ts
//
// Values are not repeated: they are the shadow's reported state.
const stampsVersion = 1

func encodeStamps(t *tree) string {
	base := t.maxTS()
	b := binary.AppendVarint(nil, base)
	b = appendStamps(b, t, base)
	return base64.RawURLEncoding.EncodeToString(b)
}

func appendStamps(b []byte, n *tree, base int64) []byte {
	b = append(b, n.kind)
	switch n.kind {
	case kindObject:
		var floor uint64
		if n.ts != 0 {
			floor = uint64(base-n.ts) + 1
		}
		b = binary.AppendUvarint(b, floor)
		b = binary.AppendUvarint(b, uint64(len(n.kids)))
		for i := range n.kids {
			b = binary.AppendUvarint(b, uint64(len(n.kids[i].key)))
			b = append(b, n.kids[i].key...)
			b = appendStamps(b, &n.kids[i].tree, base)
		}
	default:
		b = binary.AppendUvarint(b, uint64(base-n.ts))
	}
	return b
}

var errStamps = errors.New("awsiot: bad stamps")

// decodeStamps returns the stamps tree: the document's shape with times, values empty.
func decodeStamps(s string) (*tree, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, errStamps
	}
	base, k := binary.Varint(b)
	if k <= 0 {
		return nil, errStamps
	}
	t := &tree{}
	rest, err := readStamps(b[k:], t, base, 0)
	if err != nil || len(rest) != 0 || t.kind != kindObject {
		return nil, errStamps
	}
	return t, nil
}

func readStamps(p []byte, n *tree, base int64, depth int) ([]byte, error) {
	if len(p) < 1 || depth > 64 {
		return nil, errStamps
	}
	n.kind = p[0]
	p = p[1:]
	switch n.kind {
	case kindObject:
		floor, k := binary.Uvarint(p)
		if k <= 0 {
			return nil, errStamps
		}
		if floor != 0 {
			n.ts = base - int64(floor-1)
		}
		p = p[k:]
		cnt, k := binary.Uvarint(p)
		if k <= 0 || cnt > uint64(len(p)) {
			return nil, errStamps
		}
		p = p[k:]
		n.kids = make([]member, cnt)
		for i := range n.kids {
			l, k := binary.Uvarint(p)
			if k <= 0 || l > uint64(len(p)-k) {
				return nil, errStamps
			}
			n.kids[i].key = string(p[k : k+int(l)])
			if i > 0 && n.kids[i-1].key >= n.kids[i].key {
				return nil, errStamps
			}
			var err error
			if p, err = readStamps(p[k+int(l):], &n.kids[i].tree, base, depth+1); err != nil {
				return nil, err
			}
		}
		return p, nil
	case kindValue, kindDeleted:
		d, k := binary.Uvarint(p)
		if k <= 0 {
			return nil, errStamps
		}
		n.ts = base - int64(d)
		return p[k:], nil
	}
	return nil, errStamps
}

// rebuild makes the document tree of a shadow's reported state (its members, without coapgw's
// own key) from the stamps coapgw wrote with it (nil if none). What the stamps do not
// explain — a property written or deleted by someone else, a shadow without stamps — is taken
// as written at fallback (the shadow's last update time), so that older records do not
// overwrite it while newer ones do.
func rebuild(stamps *tree, fields map[string]json.RawMessage, fallback int64) (*tree, error) {
	t := &tree{kind: kindObject}
	if stamps != nil && stamps.kind == kindObject {
		t.ts = stamps.ts
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	if stamps != nil {
		for i := range stamps.kids {
			if _, ok := fields[stamps.kids[i].key]; !ok {
				keys = append(keys, stamps.kids[i].key)
			}
		}
	}
	slices.Sort(keys)
	for _, key := range keys {
		var st *tree
		if stamps != nil {
			st = stamps.find(key)
		}
		raw, ok := fields[key]
		m := member{key: key}
		switch {
		case ok && len(raw) > 0 && raw[0] == '{':
			var sub *tree
			if st != nil && st.kind == kindObject {
				sub = st
			}
			var sf map[string]json.RawMessage
			if err := json.Unmarshal(raw, &sf); err != nil {
				return nil, fmt.Errorf("awsiot: shadow reported state: %w", err)
			}
			o, err := rebuild(sub, sf, fallback)
			if err != nil {
				return nil, err
			}
			if !o.visible() && o.maxTS() == 0 {
				continue // an empty object: nothing to keep
			}
			m.tree = *o
		case ok && string(raw) != "null":
			var buf bytes.Buffer
			if err := json.Compact(&buf, raw); err != nil {
				return nil, fmt.Errorf("awsiot: shadow reported state: %w", err)
			}
			ts := fallback
			if st != nil && st.kind == kindValue {
				ts = st.ts
			}
			m.tree = tree{kind: kindValue, ts: ts, val: buf.Bytes(), depth: valueDepth(buf.Bytes())}
		case st == nil:
			continue
		case st.kind == kindDeleted:
			m.tree = tree{kind: kindDeleted, ts: st.ts}
		case st.kind == kindObject:
			o, err := rebuild(st, nil, fallback)
			if err != nil {
				return nil, err
			}
			if !o.visible() && o.maxTS() == 0 {
				continue
			}
			m.tree = *o
		default: // a value coapgw wrote that is gone: deleted by someone else since
			m.tree = tree{kind: kindDeleted, ts: max(st.ts, fallback)}
		}
		t.kids = append(t.kids, m)
	}
	return t, nil
}

// valueDepth is the nesting depth of a compact JSON value as the processor counts it for an
// array: 0 for a scalar, 1 for an array of scalars, one more for each level inside.
func valueDepth(v []byte) uint8 {
	depth, deepest := 0, 0
	inStr, esc := false, false
	for _, c := range v {
		switch {
		case inStr:
			if esc {
				esc = false
			} else if c == '\\' {
				esc = true
			} else if c == '"' {
				inStr = false
			}
		case c == '"':
			inStr = true
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return uint8(min(deepest, 255))
}
