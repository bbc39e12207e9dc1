package processor

import (
	"cmp"
	"slices"

	"github.com/coapgw/coapgw/internal/record"
)

// DecodeCBOR decodes a payload that must be one CBOR map with a JSON form (record.CBORToJSON)
// into the document DecodeJSON gives for that JSON, with the same errors, so that the same
// object sent as JSON or as CBOR gives the same document. It reads the CBOR once
// (record.CBORReader): the values' leaves hold their JSON forms, the maps become the document's
// objects directly. FuzzDecodeCBOR holds it to DecodeJSON of CBORToJSON's result.
func DecodeCBOR(payload []byte, ts int64) (*Doc, error) {
	var r record.CBORReader
	// One buffer for the values' JSON forms, which the document keeps: about the payload's size
	// (a double's shortest digits are rarely longer than its 9 bytes).
	m, err := r.Open(payload, MaxShadowDepth, make([]byte, 0, len(payload)+16))
	if err != nil {
		return nil, err
	}
	d := &Doc{}
	if err := cborObject(&r, m, &d.root, ts); err != nil {
		return nil, err
	}
	if err := r.End(); err != nil {
		return nil, err
	}
	return d, nil
}

// cborObject reads the map m into n, as DecodeJSON's object does a JSON object.
func cborObject(r *record.CBORReader, m record.CBORMap, n *node, ts int64) error {
	n.kind = kindObject
	if l := r.Len(&m); l > 0 {
		n.kids = make([]member, 0, l)
	}
	sorted := true
	var seen map[string]struct{} // the keys, once an unsorted map has more than a few
	for {
		key, ok, err := r.Key(&m)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		// Keys that came in order so far cannot repeat a smaller one; otherwise look.
		if k := len(n.kids); !sorted || k > 0 && n.kids[k-1].key >= key {
			sorted = false
			if repeated(n.kids, &seen, key) {
				return record.DuplicateKeyError(key)
			}
		}
		v, err := r.Value(&m)
		if err != nil {
			return err
		}
		switch v.Kind {
		case record.CBORMapKind:
			n.kids = append(n.kids, member{key: key})
			if err := cborObject(r, v.Map, &n.kids[len(n.kids)-1].node, ts); err != nil {
				return err
			}
		case record.CBORNull:
			n.kids = append(n.kids, member{key: key, node: node{kind: kindDeleted, ts: ts}})
		default:
			n.kids = append(n.kids, member{key: key, node: node{kind: kindValue, ts: ts, val: v.JSON, depth: uint8(v.Depth)}})
		}
	}
	if !sorted {
		slices.SortFunc(n.kids, func(a, b member) int { return cmp.Compare(a.key, b.key) })
	}
	return nil
}

// repeated reports whether key is one of kids' keys, and adds it to seen if seen is in use: up
// to 8 keys are compared in place, more through the set.
func repeated(kids []member, seen *map[string]struct{}, key string) bool {
	if *seen == nil {
		if len(kids) <= 8 {
			for i := range kids {
				if kids[i].key == key {
					return true
				}
			}
			return false
		}
		*seen = make(map[string]struct{}, 2*len(kids))
		for i := range kids {
			(*seen)[kids[i].key] = struct{}{}
		}
	}
	if _, dup := (*seen)[key]; dup {
		return true
	}
	(*seen)[key] = struct{}{}
	return false
}
