package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// SenML CBOR (RFC 8428 §6) is read by a walk over the bytes (cborWalk's head), each record
// handed to the resolver as it is read, without fxamacker/cbor's reflection or a Go value per
// record. The rules, those of a typed decode with duplicate keys, tags, NaN and infinities
// forbidden (FuzzSenMLCBORReference holds the walk to fxamacker/cbor's decode of the same pack):
//
//   - the pack is one array (definite or indefinite length, at most 65,536 records) of maps (at
//     most 1,024 pairs each), nothing after it, nested at most 16 levels;
//   - a key is an integer label (§6: bver -1, bn -2, bt -3, bu -4, bv -5, bs -6, n 0, u 1, v 2,
//     vs 3, vb 4, s 5, t 6, vd 8) or text; other integer labels and text keys are unknown fields
//     and skipped; any other key (bytes, a float, ...) is refused, and so is a key that appears
//     twice in a record;
//   - a numeric field is an integer (within int64 for a negative one) or a half, single or
//     double float; a string field is text; vb is true or false; vd is a byte string; null or
//     undefined is the field absent; anything else is refused (a simple value other than false,
//     true, null and undefined too, where fxamacker/cbor would take it as a number);
//   - anywhere in the pack, unknown fields included: no tag, no NaN or infinity, text is UTF-8
//     (each chunk of an indefinite-length string on its own), the encoding well-formed.

// SenML CBOR's bounds (the typed decode's DecOptions before the walk).
const (
	senmlMaxNesting = 16
	senmlMaxRecords = 1 << 16
	senmlMaxPairs   = 1 << 10
)

// SenML CBOR's integer labels (RFC 8428 §6, Table 6).
const (
	labelBVer = -1
	labelBN   = -2
	labelBT   = -3
	labelBU   = -4
	labelBV   = -5
	labelBS   = -6
	labelN    = 0
	labelU    = 1
	labelV    = 2
	labelVS   = 3
	labelVB   = 4
	labelS    = 5
	labelT    = 6
	labelVD   = 8
)

func senmlCBORErr(format string, a ...any) error {
	return fmt.Errorf("invalid SenML CBOR: "+format, a...)
}

// readSenMLCBOR reads a SenML CBOR pack, handing each record to z as it is read.
func readSenMLCBOR(b []byte, z *senmlResolver) error {
	w := cborWalk{b: b}
	major, info, n, err := w.head()
	if err != nil {
		return senmlCBORErr("%s", cborReason(err))
	}
	if major != 4 {
		return senmlCBORErr("want an array of records")
	}
	indef := info == 31
	if !indef && n > senmlMaxRecords {
		return senmlCBORErr("more than %d records", senmlMaxRecords)
	}
	var sc senmlScratch
	for i := 0; indef || uint64(i) < n; i++ {
		if indef && w.isBreak() {
			break
		}
		if i >= senmlMaxRecords {
			return senmlCBORErr("more than %d records", senmlMaxRecords)
		}
		var r senmlFields
		if err := w.senmlRecord(z, &r, &sc, i); err != nil {
			return err
		}
		if err := z.add(i, &r); err != nil {
			return err
		}
	}
	if w.i != len(b) {
		return senmlCBORErr("trailing data")
	}
	return nil
}

// senmlScratch is a record's unknown keys, to refuse one that appears twice: as bytes (0 and an
// integer label's 8 bytes; 't' and a text key's bytes), compared in place up to 16, then in a set.
type senmlScratch struct {
	keys [][]byte
	set  map[string]struct{}
	buf  []byte // indefinite-length strings put together
}

func (s *senmlScratch) reset() {
	s.keys = s.keys[:0]
	s.set = nil
}

func (s *senmlScratch) add(k []byte) bool {
	if s.set == nil {
		for _, o := range s.keys {
			if string(o) == string(k) {
				return false
			}
		}
		if len(s.keys) < 16 {
			s.keys = append(s.keys, k)
			return true
		}
		s.set = make(map[string]struct{}, 32)
		for _, o := range s.keys {
			s.set[string(o)] = struct{}{}
		}
	}
	if _, dup := s.set[string(k)]; dup {
		return false
	}
	s.set[string(k)] = struct{}{}
	return true
}

// senmlRecord reads record i, a map, into r.
func (w *cborWalk) senmlRecord(z *senmlResolver, r *senmlFields, sc *senmlScratch, i int) error {
	major, info, n, err := w.head()
	if err != nil {
		return senmlCBORErr("%s", cborReason(err))
	}
	if major != 5 {
		return senmlCBORErr("record %d is not a map", i)
	}
	indef := info == 31
	if !indef && n > senmlMaxPairs {
		return senmlCBORErr("record %d has more than %d fields", i, senmlMaxPairs)
	}
	sc.reset()
	var seen uint32 // known labels, by label+8
	for k := 0; indef || uint64(k) < n; k++ {
		if indef && w.isBreak() {
			break
		}
		if k >= senmlMaxPairs {
			return senmlCBORErr("record %d has more than %d fields", i, senmlMaxPairs)
		}
		major, info, arg, err := w.head()
		if err != nil {
			return senmlCBORErr("%s", cborReason(err))
		}
		switch {
		case (major == 0 || major == 1) && info != 31:
			if arg > math.MaxInt64 {
				return senmlCBORErr("record %d: label out of range", i)
			}
			label := int64(arg)
			if major == 1 {
				label = -1 - label
			}
			if label >= labelBS && label <= labelVD && label != 7 {
				bit := uint32(1) << (label + 8)
				if seen&bit != 0 {
					return senmlCBORErr("record %d: duplicate label %d", i, label)
				}
				seen |= bit
				if err := w.senmlField(r, sc, int(label), i); err != nil {
					return err
				}
				continue
			}
			key := binary.BigEndian.AppendUint64(make([]byte, 1, 9), uint64(label)) // rare
			if !sc.add(key) {
				return senmlCBORErr("record %d: duplicate label %d", i, label)
			}
		case major == 3:
			s, err := w.textBytes(info, arg, sc, true)
			if err != nil {
				return err
			}
			key := make([]byte, 0, 1+len(s)) // rare: a text key in SenML CBOR
			key = append(append(key, 't'), s...)
			if !sc.add(key) {
				return senmlCBORErr("record %d: duplicate key %.32q", i, s)
			}
		default:
			return senmlCBORErr("record %d: a key must be an integer label or text", i)
		}
		if err := w.skip(2); err != nil { // an unknown field's value
			return err
		}
	}
	return nil
}

// senmlField reads the value of a known label into r.
func (w *cborWalk) senmlField(r *senmlFields, sc *senmlScratch, label, i int) error {
	if w.i >= len(w.b) {
		return senmlCBORErr("unexpected end")
	}
	if c := w.b[w.i]; c == 0xf6 || c == 0xf7 { // null, undefined: absent
		w.i++
		return nil
	}
	var num *float64
	var str *[]byte
	var bit uint16
	switch label {
	case labelBVer:
		num, bit = &r.bver, hasBVer
	case labelBT:
		num, bit = &r.bt, hasBT
	case labelBV:
		num, bit = &r.bv, hasBV
	case labelBS:
		num, bit = &r.bs, hasBS
	case labelV:
		num, bit = &r.v, hasV
	case labelS:
		num, bit = &r.s, hasS
	case labelT:
		num = &r.t
	case labelBN:
		str, bit = &r.bn, hasBN
	case labelBU:
		str, bit = &r.bu, hasBU
	case labelN:
		str = &r.n
	case labelU:
		str = &r.u
	case labelVS:
		str, bit = &r.vs, hasVS
	}
	major, info, arg, err := w.head()
	if err != nil {
		return senmlCBORErr("%s", cborReason(err))
	}
	switch {
	case num != nil:
		f, ok, err := cborNumber(major, info, arg)
		if err != nil {
			return err
		}
		if !ok {
			return senmlCBORErr("record %d: label %d must be a number", i, label)
		}
		*num, r.has = f, r.has|bit
	case label == labelVB:
		if major != 7 || info != 20 && info != 21 {
			return senmlCBORErr("record %d: vb must be a boolean", i)
		}
		r.vb, r.has = info == 21, r.has|hasVB
	case label == labelVD:
		if major != 2 {
			return senmlCBORErr("record %d: vd must be a byte string", i)
		}
		b, err := w.byteString(info, arg, sc)
		if err != nil {
			return err
		}
		r.vdb, r.has = b, r.has|hasVDB
	default: // text: bn, bu, n, u, vs
		if major != 3 {
			return senmlCBORErr("record %d: label %d must be text", i, label)
		}
		s, err := w.textBytes(info, arg, sc, false)
		if err != nil {
			return err
		}
		*str, r.has = s, r.has|bit
	}
	return nil
}

// cborNumber is the number an item's head stands for: ok false when it is not one; an error
// for NaN, an infinity or a negative integer beyond int64.
func cborNumber(major, info byte, arg uint64) (f float64, ok bool, err error) {
	switch {
	case major == 0 && info != 31:
		return float64(arg), true, nil
	case major == 1 && info != 31:
		if arg > math.MaxInt64 {
			return 0, false, senmlCBORErr("integer out of range")
		}
		return float64(-1 - int64(arg)), true, nil
	case major == 7 && info >= 25 && info <= 27:
		f = cborFloat(info, arg)
		if !finite(f) {
			return 0, false, senmlCBORErr("NaN and infinity are not supported")
		}
		return f, true, nil
	}
	return 0, false, nil
}

// textBytes reads the text string whose head was read: in place when it has a definite length;
// an indefinite one's chunks put together in a new slice (key: for a map key, which must stay
// valid past the next string).
func (w *cborWalk) textBytes(info byte, n uint64, sc *senmlScratch, key bool) ([]byte, error) {
	if info != 31 {
		s, err := w.takeUTF8(n)
		return s, err
	}
	var out []byte
	if !key {
		out = sc.buf[:0]
	}
	for !w.isBreak() {
		major, info, n, err := w.head()
		if err != nil {
			return nil, senmlCBORErr("%s", cborReason(err))
		}
		if major != 3 || info == 31 {
			return nil, senmlCBORErr("bad text string chunk")
		}
		s, err := w.takeUTF8(n)
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
	}
	if !key {
		sc.buf = out[:0]
		out = append([]byte(nil), out...) // the reading keeps it
	}
	return out, nil
}

// byteString reads the byte string whose head was read (a new slice for an indefinite one).
func (w *cborWalk) byteString(info byte, n uint64, sc *senmlScratch) ([]byte, error) {
	if info != 31 {
		if n > uint64(len(w.b)-w.i) {
			return nil, senmlCBORErr("unexpected end")
		}
		s := w.b[w.i : w.i+int(n) : w.i+int(n)]
		w.i += int(n)
		return s, nil
	}
	out := []byte{}
	for !w.isBreak() {
		major, info, n, err := w.head()
		if err != nil {
			return nil, senmlCBORErr("%s", cborReason(err))
		}
		if major != 2 || info == 31 || n > uint64(len(w.b)-w.i) {
			return nil, senmlCBORErr("bad byte string chunk")
		}
		out = append(out, w.b[w.i:w.i+int(n)]...)
		w.i += int(n)
	}
	return out, nil
}

// takeUTF8 is take for SenML CBOR: UTF-8 is checked, NUL is left to the shadow rules' check
// (JSONFormKeepsRules).
func (w *cborWalk) takeUTF8(n uint64) ([]byte, error) {
	if n > uint64(len(w.b)-w.i) {
		return nil, senmlCBORErr("unexpected end")
	}
	s := w.b[w.i : w.i+int(n) : w.i+int(n)]
	w.i += int(n)
	if !utf8.Valid(s) {
		return nil, senmlCBORErr("text string is not UTF-8")
	}
	return s, nil
}

// skip checks and skips the item at w.i, an unknown field's value; depth is its level (the
// pack is level 1).
func (w *cborWalk) skip(depth int) error {
	major, info, n, err := w.head()
	if err != nil {
		return senmlCBORErr("%s", cborReason(err))
	}
	switch major {
	case 0, 1:
		if info == 31 {
			return errSenMLMalformed
		}
		return nil
	case 2, 3:
		if info != 31 {
			if major == 2 {
				if n > uint64(len(w.b)-w.i) {
					return senmlCBORErr("unexpected end")
				}
				w.i += int(n)
				return nil
			}
			_, err := w.takeUTF8(n)
			return err
		}
		for !w.isBreak() {
			m, info, n, err := w.head()
			if err != nil {
				return senmlCBORErr("%s", cborReason(err))
			}
			if m != major || info == 31 {
				return errSenMLMalformed
			}
			if m == 2 {
				if n > uint64(len(w.b)-w.i) {
					return senmlCBORErr("unexpected end")
				}
				w.i += int(n)
			} else if _, err := w.takeUTF8(n); err != nil {
				return err
			}
		}
		return nil
	case 4, 5:
		if depth+1 > senmlMaxNesting {
			return senmlCBORErr("nested deeper than %d levels", senmlMaxNesting)
		}
		limit := uint64(senmlMaxRecords)
		if major == 5 {
			limit = senmlMaxPairs
		}
		if info != 31 && n > limit {
			return senmlCBORErr("array or map too long")
		}
		items := uint64(1)
		if major == 5 {
			items = 2
		}
		for k := uint64(0); info == 31 || k < n; k++ {
			if info == 31 && w.isBreak() {
				return nil
			}
			if k >= limit {
				return senmlCBORErr("array or map too long")
			}
			for range items {
				if err := w.skip(depth + 1); err != nil {
					return err
				}
			}
		}
		return nil
	case 6:
		return senmlCBORErr("tags are not supported (tag %d)", n)
	}
	switch { // major 7
	case info == 24 && n < 32, info == 31:
		return errSenMLMalformed
	case info >= 25 && info <= 27 && !finite(cborFloat(info, n)):
		return senmlCBORErr("NaN and infinity are not supported")
	}
	return nil
}

var errSenMLMalformed = errors.New("invalid SenML CBOR: malformed")
