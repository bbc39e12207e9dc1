package processor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/coapgw/coapgw/internal/jsonscan"
)

// Shadow limits, as AWS IoT enforces them on a thing's reported state.
const (
	// MaxShadowBytes is the largest reported state document: the compact JSON of the reported
	// object, which is what AWS counts toward its 8 KB limit (metadata does not count).
	MaxShadowBytes = 8192
	// MaxShadowDepth is the deepest nesting of objects and arrays in the reported state; the
	// reported object itself is level 1 (the same count the device API applies to payloads).
	MaxShadowDepth = 6
)

// Doc is a JSON object tree whose every leaf carries the time it was written (Unix nanoseconds):
// the properties of one record, the coalesced properties of several, or a thing's reported state.
//
// Merging is last-writer-wins per leaf: a value older than what a leaf already holds never
// replaces it, so records may be merged in any order and any number of times with the same
// result. A JSON null deletes; the deletion is kept inside the tree (invisible in the rendered
// state) with its time, so an older record cannot bring a deleted property back. Deleting an
// object deletes the leaves under it that are not newer than the deletion and remembers the time
// as the object's floor. Arrays are leaf values, replaced as a whole, as AWS IoT does.
//
// Root gives read access to the tree (see Node), and SetFloor, SetValue, SetDeleted and SetObject
// build one as told, for code that keeps documents in a form of its own.
//
// A Doc is not safe for concurrent use. Merge may keep references to the source's value bytes;
// neither Doc may be modified afterwards except through this API.
type Doc struct {
	root node
}

type nodeKind uint8

const (
	kindObject  nodeKind = iota // kids; ts is the floor: writes below it older than ts are ignored
	kindValue                   // val; ts is when it was written
	kindDeleted                 // ts is when it was deleted
)

type node struct {
	kind  nodeKind
	depth uint8 // kindValue: nesting depth of an array value (0 for a scalar)
	ts    int64
	val   []byte   // kindValue: compact JSON, never null and never an object
	kids  []member // kindObject: sorted by key
}

type member struct {
	key string
	node
}

// NewDoc returns an empty document.
func NewDoc() *Doc { return &Doc{} }

func (n *node) find(key string) (int, bool) {
	return slices.BinarySearchFunc(n.kids, key, func(m member, k string) int { return strings.Compare(m.key, k) })
}

// Merge merges src into d, leaf by leaf, keeping whichever write is newer. It reports whether d
// changed (a value, a deletion or a timestamp); merging what d already reflects changes nothing.
func (d *Doc) Merge(src *Doc) bool {
	return mergeObject(&d.root, &src.root, 0)
}

// mergeObject merges the object src into the object dst; writes older than floor are ignored.
func mergeObject(dst, src *node, floor int64) bool {
	changed := false
	if src.ts > dst.ts {
		clearObject(dst, src.ts)
		changed = true
	}
	floor = max(floor, dst.ts)
	for i := range src.kids {
		sm := &src.kids[i]
		idx, found := dst.find(sm.key)
		if found {
			if mergeNode(&dst.kids[idx].node, &sm.node, floor) {
				changed = true
			}
			continue
		}
		if n, ok := newNode(&sm.node, floor); ok {
			dst.kids = slices.Insert(dst.kids, idx, member{key: sm.key, node: n})
			changed = true
		}
	}
	return changed
}

// newNode returns what src becomes where nothing exists yet, and false if that is nothing.
func newNode(src *node, floor int64) (node, bool) {
	switch src.kind {
	case kindValue:
		return *src, src.ts > floor
	case kindDeleted:
		return *src, src.ts > floor
	}
	n := node{kind: kindObject}
	mergeObject(&n, src, floor)
	return n, len(n.kids) > 0 || n.ts > floor
}

// mergeNode merges src into the existing node dst.
func mergeNode(dst, src *node, floor int64) bool {
	switch src.kind {
	case kindValue:
		if src.ts <= floor {
			return false
		}
		switch dst.kind {
		case kindValue:
			// Of two values written at the same time the larger wins, so that the order of
			// merging never matters.
			if src.ts < dst.ts || src.ts == dst.ts && bytes.Compare(src.val, dst.val) <= 0 {
				return false
			}
		case kindDeleted:
			if src.ts <= dst.ts { // a deletion wins over a value written at the same time
				return false
			}
		case kindObject:
			if src.ts < dst.maxTS() {
				return false
			}
		}
		*dst = *src
		return true
	case kindDeleted:
		if src.ts <= floor {
			return false
		}
		switch dst.kind {
		case kindValue:
			if src.ts < dst.ts {
				return false
			}
			*dst = node{kind: kindDeleted, ts: src.ts}
			return true
		case kindDeleted:
			if src.ts <= dst.ts {
				return false
			}
			dst.ts = src.ts
			return true
		default:
			if src.ts <= dst.ts {
				return false
			}
			clearObject(dst, src.ts)
			if len(dst.kids) == 0 {
				*dst = node{kind: kindDeleted, ts: src.ts}
			}
			return true
		}
	}
	// src is an object.
	if dst.kind == kindObject {
		return mergeObject(dst, src, floor)
	}
	// A value or a deletion becomes an object if one of src's leaves is newer than it.
	n := node{kind: kindObject, ts: dst.ts}
	mergeObject(&n, src, floor)
	switch {
	case n.visible():
		*dst = n
		return true
	case src.ts > dst.ts && src.ts > floor:
		*dst = node{kind: kindDeleted, ts: src.ts}
		return true
	}
	return false
}

// clearObject deletes, as of time t, everything in the object n that is not newer than t.
func clearObject(n *node, t int64) {
	kids := n.kids[:0]
	for _, m := range n.kids {
		if m.maxTS() <= t {
			continue
		}
		if m.kind == kindObject {
			clearObject(&m.node, t)
		}
		kids = append(kids, m)
	}
	clear(n.kids[len(kids):])
	n.kids = kids
	n.ts = max(n.ts, t)
}

// maxTS is the newest time anywhere in n.
func (n *node) maxTS() int64 {
	t := n.ts
	for i := range n.kids {
		t = max(t, n.kids[i].maxTS())
	}
	return t
}

// visible reports whether n shows in the rendered state.
func (n *node) visible() bool {
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

// Clone returns a deep copy of d (value bytes are shared; they are never modified).
func (d *Doc) Clone() *Doc {
	return &Doc{root: d.root.clone()}
}

func (n node) clone() node {
	if n.kind == kindObject {
		kids := make([]member, len(n.kids))
		for i, m := range n.kids {
			kids[i] = member{key: m.key, node: m.node.clone()}
		}
		n.kids = kids
	}
	return n
}

// Empty reports whether the rendered state has no property.
func (d *Doc) Empty() bool { return !d.root.visible() }

// Newest is the newest write time in d (Unix nanoseconds), 0 for an empty document.
func (d *Doc) Newest() int64 { return d.root.maxTS() }

// AppendState appends the state as compact JSON: the object AWS IoT shows as state.reported.
func (d *Doc) AppendState(b []byte) []byte { return appendState(b, &d.root) }

func appendState(b []byte, n *node) []byte {
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
		b = jsonscan.AppendQuoted(b, m.key)
		b = append(b, ':')
		b = appendState(b, &m.node)
	}
	return append(b, '}')
}

// AppendMetadata appends the per-leaf metadata AWS IoT shows as metadata.reported: the same tree
// as the state with every leaf replaced by {"timestamp":<Unix seconds>}. An array gets an array of
// such metadata, one per element.
func (d *Doc) AppendMetadata(b []byte) []byte { return appendMetadata(b, &d.root) }

func appendMetadata(b []byte, n *node) []byte {
	if n.kind == kindValue {
		ts := n.ts / 1e9
		if n.val[0] != '[' {
			return appendTimestamp(b, ts)
		}
		return appendValueMetadata(b, n.val, ts)
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
		b = jsonscan.AppendQuoted(b, m.key)
		b = append(b, ':')
		b = appendMetadata(b, &m.node)
	}
	return append(b, '}')
}

func appendTimestamp(b []byte, sec int64) []byte {
	b = append(b, `{"timestamp":`...)
	b = strconv.AppendInt(b, sec, 10)
	return append(b, '}')
}

// appendValueMetadata appends the metadata of a compact JSON value inside an array.
func appendValueMetadata(b []byte, v []byte, ts int64) []byte {
	p := parser{Scanner: jsonscan.Scanner{B: v}, maxDepth: 1 << 20}
	var n node
	switch v[0] {
	case '[':
		b = append(b, '[')
		p.I = 1
		for k := 0; p.I < len(v) && v[p.I] != ']'; k++ {
			if k > 0 {
				p.I++ // ','
			}
			start := p.I
			if _, err := p.skip(0); err != nil {
				return append(b, ']') // a corrupt element: the metadata so far, still valid JSON
			}
			if k > 0 {
				b = append(b, ',')
			}
			b = appendValueMetadata(b, v[start:p.I], ts)
		}
		return append(b, ']')
	case '{':
		if err := p.object(&n, 0, ts*1e9); err != nil {
			return append(b, "{}"...)
		}
		return appendMetadata(b, &n)
	}
	return appendTimestamp(b, ts)
}

// Size is the length of AppendState's output, without building it.
func (d *Doc) Size() int { return stateSize(&d.root) }

func stateSize(n *node) int {
	if n.kind == kindValue {
		return len(n.val)
	}
	size, k := 2, 0
	for i := range n.kids {
		m := &n.kids[i]
		if !m.visible() {
			continue
		}
		if k > 0 {
			size++
		}
		k++
		size += jsonscan.QuotedLen(m.key) + 1 + stateSize(&m.node)
	}
	return size
}

// Depth is the nesting depth of the rendered state: 1 for an object of scalars.
func (d *Doc) Depth() int { return stateDepth(&d.root) }

func stateDepth(n *node) int {
	if n.kind == kindValue {
		return int(n.depth)
	}
	depth := 1
	for i := range n.kids {
		if m := &n.kids[i]; m.visible() {
			depth = max(depth, 1+stateDepth(&m.node))
		}
	}
	return depth
}

// CheckLimits returns a reason if the state breaks AWS IoT's shadow limits, "" if it fits.
func (d *Doc) CheckLimits() string {
	if size := d.Size(); size > MaxShadowBytes {
		return fmt.Sprintf("shadow would be %d bytes, over the %d-byte limit", size, MaxShadowBytes)
	}
	if depth := d.Depth(); depth > MaxShadowDepth {
		return fmt.Sprintf("shadow would be nested %d levels, over the limit of %d", depth, MaxShadowDepth)
	}
	return ""
}

// Properties is the number of values (arrays included) in the rendered state: what
// --max-properties counts.
func (d *Doc) Properties() int { return stateProps(&d.root) }

func stateProps(n *node) int {
	if n.kind == kindValue {
		return 1
	}
	c := 0
	for i := range n.kids {
		c += stateProps(&n.kids[i].node)
	}
	return c
}

// Numbers calls fn for every numeric leaf of the rendered state with its path (keys joined with
// ".") and value. Array elements are not visited.
func (d *Doc) Numbers(fn func(path string, v float64)) {
	var path []byte
	numbers(&d.root, path, fn)
}

func numbers(n *node, path []byte, fn func(string, float64)) {
	for i := range n.kids {
		m := &n.kids[i]
		p := path
		if len(p) > 0 {
			p = append(p, '.')
		}
		p = append(p, m.key...)
		switch m.kind {
		case kindObject:
			numbers(&m.node, p, fn)
		case kindValue:
			if c := m.val[0]; c == '-' || c >= '0' && c <= '9' {
				if v, err := strconv.ParseFloat(string(m.val), 64); err == nil {
					fn(string(p), v)
				}
			}
		}
	}
}

// binaryVersion is the first byte of AppendBinary's encoding.
const binaryVersion = 1

// AppendBinary appends a compact binary encoding of d that keeps everything, deletions and
// nanosecond times included; UnmarshalBinary reads it back.
func (d *Doc) AppendBinary(b []byte) []byte {
	b = append(b, binaryVersion)
	return appendNode(b, &d.root)
}

func appendNode(b []byte, n *node) []byte {
	b = append(b, byte(n.kind))
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
			b = appendNode(b, &n.kids[i].node)
		}
	}
	return b
}

var errBadBinary = errors.New("document: bad binary encoding")

// UnmarshalBinary replaces d with the document encoded in data (from AppendBinary). The
// document keeps references into data.
func (d *Doc) UnmarshalBinary(data []byte) error {
	if len(data) < 1 || data[0] != binaryVersion {
		return errBadBinary
	}
	rest, err := readNode(data[1:], &d.root, 0)
	if err != nil {
		return err
	}
	if len(rest) != 0 || d.root.kind != kindObject {
		return errBadBinary
	}
	return nil
}

func readNode(p []byte, n *node, depth int) ([]byte, error) {
	if len(p) < 1 || depth > 64 {
		return nil, errBadBinary
	}
	n.kind = nodeKind(p[0])
	ts, k := binary.Varint(p[1:])
	if k <= 0 {
		return nil, errBadBinary
	}
	n.ts = ts
	p = p[1+k:]
	switch n.kind {
	case kindValue:
		if len(p) < 1 {
			return nil, errBadBinary
		}
		n.depth = p[0]
		l, k := binary.Uvarint(p[1:])
		if k <= 0 || l == 0 || l > uint64(len(p)-1-k) {
			return nil, errBadBinary
		}
		n.val = p[1+k : 1+k+int(l) : 1+k+int(l)]
		return p[1+k+int(l):], nil
	case kindDeleted:
		return p, nil
	case kindObject:
		cnt, k := binary.Uvarint(p)
		if k <= 0 || cnt > uint64(len(p)) {
			return nil, errBadBinary
		}
		p = p[k:]
		n.kids = make([]member, cnt)
		for i := range n.kids {
			l, k := binary.Uvarint(p)
			if k <= 0 || l > uint64(len(p)-k) {
				return nil, errBadBinary
			}
			n.kids[i].key = string(p[k : k+int(l)])
			if i > 0 && n.kids[i-1].key >= n.kids[i].key {
				return nil, errBadBinary
			}
			var err error
			if p, err = readNode(p[k+int(l):], &n.kids[i].node, depth+1); err != nil {
				return nil, err
			}
		}
		return p, nil
	}
	return nil, errBadBinary
}
