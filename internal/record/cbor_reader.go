package record

import (
	"errors"
	"fmt"
)

// A CBORReader reads a CBOR payload in CBORToJSON's model a map member at a time, for a caller
// that builds its own tree of the maps (the processor's document) instead of reading the JSON
// form back: Open reads the top-level map's head, Key each key in turn, Value the value after
// it, and End checks that nothing follows the map. A value that is neither a map nor null comes
// as its JSON form (CBORToJSON's bytes for it). The reader returns CBORToJSON's errors at the
// same points of the walk, but two checks are the caller's, since it holds the keys: a key that
// repeats one of its map (DuplicateKeyError) and, at the end, nothing else.
//
// The zero value is ready for Open. A CBORReader is not safe for concurrent use.
type CBORReader struct {
	w   cborWalk
	buf []byte // the values' JSON forms: Value returns slices of it
	key []byte // Key's scratch
}

// CBORMap is a map being read (Key's state).
type CBORMap struct {
	n, k  uint64
	indef bool
	depth int // the map's level: 1 for the top-level map
}

// Len is about how many members m has, for sizing: its length if it is definite and could be
// that long in what is left of the payload, or at most that much; 0 for an indefinite map.
func (r *CBORReader) Len(m *CBORMap) int {
	if m.indef {
		return 0
	}
	return int(min(m.n, uint64(len(r.w.b)-r.w.i)/2))
}

// CBORKind is the kind of a value Value read.
type CBORKind uint8

// The kinds of value.
const (
	CBORScalar  CBORKind = iota // a number, text, true or false: JSON holds its form
	CBORArray                   // an array: JSON holds its form, Depth its nesting
	CBORMapKind                 // a map: Map is its state, for Key
	CBORNull                    // null
)

// CBORValue is a value Value read.
type CBORValue struct {
	Kind CBORKind
	// JSON is the JSON form of a scalar or an array; its capacity ends at its length.
	JSON []byte
	// Depth is the nesting of an array: 1 for an array of scalars, one more per level of
	// arrays or maps inside it.
	Depth int
	Map   CBORMap
}

// Open starts reading the CBOR payload b, which must be one map nested at most maxDepth levels
// deep (as CBORToJSON's maxDepth), and returns the top-level map. The JSON forms of the values
// are appended to buf, whose capacity should be about the payload's size; they are never
// overwritten, so the values stay valid as long as the caller keeps them.
func (r *CBORReader) Open(b []byte, maxDepth int, buf []byte) (CBORMap, error) {
	if len(b) == 0 || b[0]>>5 != 5 {
		return CBORMap{}, errors.New("payload must be a CBOR map")
	}
	r.w = cborWalk{b: b, maxDepth: min(maxDepth, cborMaxNesting)}
	r.buf = buf
	v, err := r.value(0)
	return v.Map, err
}

// End returns an error if anything follows the top-level map (call it once the map is read).
func (r *CBORReader) End() error {
	if r.w.i != len(r.w.b) {
		return errors.New("malformed CBOR: trailing data")
	}
	return nil
}

// Key reads the next key of m and returns it, or false at the end of m. An empty key is an
// error; a repeated one is the caller's to find.
func (r *CBORReader) Key(m *CBORMap) (string, bool, error) {
	w := &r.w
	if m.indef {
		if w.isBreak() {
			return "", false, nil
		}
	} else if m.k == m.n {
		return "", false, nil
	}
	m.k++
	if w.i >= len(w.b) {
		return "", false, errCBORTruncated
	}
	if w.b[w.i]>>5 != 3 {
		return "", false, errors.New("CBOR map keys must be text strings")
	}
	_, info, arg, err := w.head()
	if err != nil {
		return "", false, err
	}
	var key []byte
	if info != 31 {
		key, err = w.take(arg)
	} else {
		key, err = w.text(r.key[:0], info, arg, textRaw)
		r.key = key
	}
	if err != nil {
		return "", false, err
	}
	if len(key) == 0 {
		return "", false, errors.New("empty key")
	}
	return string(key), true, nil
}

// Value reads the value after the key Key returned from m.
func (r *CBORReader) Value(m *CBORMap) (CBORValue, error) {
	return r.value(m.depth)
}

// value reads the value at w.i inside a container of level depth.
func (r *CBORReader) value(depth int) (CBORValue, error) {
	w := &r.w
	if w.i < len(w.b) {
		switch c := w.b[w.i]; {
		case c == 0xf6:
			w.i++
			return CBORValue{Kind: CBORNull}, nil
		case c>>5 == 5:
			_, info, arg, err := w.head()
			if err != nil {
				return CBORValue{}, err
			}
			if depth+1 > w.maxDepth {
				return CBORValue{}, fmt.Errorf("CBOR nested deeper than %d levels", w.maxDepth)
			}
			return CBORValue{Kind: CBORMapKind, Map: CBORMap{n: arg, indef: info == 31, depth: depth + 1}}, nil
		}
	}
	start := len(r.buf)
	w.deepest = depth
	var err error
	if r.buf, err = w.item(r.buf, depth); err != nil {
		return CBORValue{}, err
	}
	v := CBORValue{JSON: r.buf[start:len(r.buf):len(r.buf)], Depth: w.deepest - depth}
	if v.Depth > 0 {
		v.Kind = CBORArray
	}
	return v, nil
}

// DuplicateKeyError is CBORToJSON's error for a key that repeats one of its map.
func DuplicateKeyError(key string) error {
	q := append(appendJSONString([]byte{'"'}, key), '"')
	return fmt.Errorf("duplicate key %.32s", q)
}
