package processor

import (
	"errors"
	"slices"
)

// NodeKind is what a node of a Doc's tree is.
type NodeKind uint8

const (
	// ObjectNode is an object: members in key order, and a floor, the time of its last deletion as
	// a whole (writes below it that are older are ignored), 0 if none.
	ObjectNode = NodeKind(kindObject)
	// ValueNode is a value: compact JSON, never null and never an object, and when it was written.
	ValueNode = NodeKind(kindValue)
	// DeletedNode is a deletion (a JSON null), kept with when it was deleted.
	DeletedNode = NodeKind(kindDeleted)
)

// Node is a read-only view of one node of a Doc's tree: the root object (Doc.Root) or a member of
// an object (Node.Member, Node.Find). It is valid until the Doc is next modified. The zero Node
// reads as an empty object without a floor (like the root of NewDoc's document): no members, not
// visible.
//
// With Node a Doc can be taken apart exactly — nanosecond times, deletions and object floors
// included — and put back together with SetFloor, SetValue, SetDeleted and SetObject, without its
// binary encoding. This is for code that keeps documents in a form of its own (the AWS IoT sink
// keeps the times in the shadow next to the state); records are applied with Merge.
type Node struct {
	key string
	n   *node
}

// emptyObject is what the zero Node reads as.
var emptyObject = node{kind: kindObject}

func (n Node) node() *node {
	if n.n == nil {
		return &emptyObject
	}
	return n.n
}

// Root returns d's root object.
func (d *Doc) Root() Node { return Node{n: &d.root} }

// Key is the key n has in its object, "" for the root.
func (n Node) Key() string { return n.key }

// Kind is what n is.
func (n Node) Kind() NodeKind { return NodeKind(n.node().kind) }

// Time is when a value was written or a deletion made, or an object's floor (0 if none), in Unix
// nanoseconds.
func (n Node) Time() int64 { return n.node().ts }

// Value is a value's compact JSON (shared with the document: not to be modified); nil for an
// object or a deletion.
func (n Node) Value() []byte { return n.node().val }

// Len is the number of members of an object, deletions included; 0 for a value or a deletion.
func (n Node) Len() int { return len(n.node().kids) }

// Member returns the i-th member of an object, in key order; i must be in [0, Len()).
func (n Node) Member(i int) Node {
	m := &n.node().kids[i]
	return Node{key: m.key, n: &m.node}
}

// Find returns the member of an object with key, and whether there is one (a deletion included).
func (n Node) Find(key string) (Node, bool) {
	p := n.node()
	i, ok := p.find(key)
	if !ok {
		return Node{}, false
	}
	return Node{key: key, n: &p.kids[i].node}, true
}

// Visible reports whether n shows in the rendered state: a value, or an object with a visible
// member.
func (n Node) Visible() bool { return n.node().visible() }

// AppendState appends n rendered as compact JSON, as Doc.AppendState renders the whole document:
// a value as itself, an object as the object of its visible members.
func (n Node) AppendState(b []byte) []byte { return appendState(b, n.node()) }

// SetFloor sets the floor of d's root object (see ObjectNode).
//
// SetFloor, SetValue, SetDeleted and SetObject set d as told whatever it holds: they do not merge
// (an older write is not ignored, a floor deletes nothing), so that a document read through Node
// is rebuilt exactly. A member set again is replaced. Members may be set in any order; ascending
// key order is the cheapest, after Grow.
func (d *Doc) SetFloor(ts int64) { d.root.ts = ts }

var errBadValue = errors.New("document: a value must be JSON, neither null nor an object")

// SetValue sets the member key of d's root to the value val written at ts. val is kept as is
// (not copied): it must be one compact JSON value, not null and not an object (use SetObject);
// only that much is checked, not its syntax.
func (d *Doc) SetValue(key string, ts int64, val []byte) error {
	if len(val) == 0 || val[0] == '{' || string(val) == "null" {
		return errBadValue
	}
	d.set(key, node{kind: kindValue, depth: valueDepth(val), ts: ts, val: val})
	return nil
}

// SetDeleted sets the member key of d's root to a deletion made at ts.
func (d *Doc) SetDeleted(key string, ts int64) {
	d.set(key, node{kind: kindDeleted, ts: ts})
}

// SetObject sets the member key of d's root to the root object of sub, floor included. d then
// shares sub's tree: sub must not be used afterwards.
func (d *Doc) SetObject(key string, sub *Doc) {
	d.set(key, sub.root)
}

// Grow makes room in d's root for n more members, so that setting them allocates no more than
// needed.
func (d *Doc) Grow(n int) { d.root.kids = slices.Grow(d.root.kids, n) }

func (d *Doc) set(key string, n node) {
	i, found := d.root.find(key)
	if found {
		d.root.kids[i].node = n
		return
	}
	d.root.kids = slices.Insert(d.root.kids, i, member{key: key, node: n})
}

// valueDepth is the nesting depth of a compact JSON value as DecodeJSON records it for an array:
// 0 for a scalar, 1 for an array of scalars, one more for each level of arrays or objects inside.
func valueDepth(v []byte) uint8 {
	depth, deepest := 0, 0
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '"': // skip the string
			for i++; i < len(v) && v[i] != '"'; i++ {
				if v[i] == '\\' {
					i++
				}
			}
		case '[', '{':
			depth++
			deepest = max(deepest, depth)
		case ']', '}':
			depth--
		}
	}
	return uint8(min(deepest, 255))
}
