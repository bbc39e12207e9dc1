package record

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/x448/float16"
)

// CBOR (RFC 8949) payloads are read into the same model as JSON: CBORToJSON turns one into the
// JSON object it stands for, and everything after (the shadow rules, the shadow, history) sees
// that JSON. The mapping:
//
//   - a map is an object; its keys must be text strings (any other key: an error);
//   - an array is an array; definite and indefinite lengths are both accepted;
//   - an unsigned or negative integer is a JSON integer with the same digits (every 64-bit
//     integer is within float64's range; the shadow keeps the digits);
//   - a half, single or double float is a JSON number written as Go's encoding/json writes it
//     (shortest form at the float's own precision, so a single-precision 21.5 is "21.5");
//     NaN and the infinities have no JSON form: an error;
//   - a text string is a JSON string (UTF-8, as CBOR requires); false, true and null are
//     themselves;
//   - byte strings, tags (including epoch times and big numbers), undefined and the other
//     simple values have no JSON form the device could mean unambiguously: an error, never a
//     guess.
//
// The result keeps the shadow rules by construction (numbers are finite float64s or 64-bit
// integers, text is UTF-8 without NUL, keys are nonempty and unique in their map, nesting is
// within maxDepth), so it needs no JSON check of its own; the ingest property test
// TestJSONCBOREquivalence holds it to the JSON check. The errors are short and meant for a 4.00
// diagnostic.

// cborMaxNesting bounds the walk's recursion whatever maxDepth a caller passes.
const cborMaxNesting = 32

// CBORToJSON appends to dst the JSON object that the CBOR payload b stands for (see the mapping
// above), or returns an error if b is not one well-formed CBOR map that has a JSON form. Maps and
// arrays nested deeper than maxDepth levels (the top-level map is level 1) are an error too.
func CBORToJSON(dst, b []byte, maxDepth int) ([]byte, error) {
	return cborToJSON(dst, b, maxDepth, false)
}

// CheckCBOR returns the error CBORToJSON would return for b, without writing its JSON form; it
// appends to scratch only what it compares (the keys) and returns it, to be reused.
func CheckCBOR(scratch, b []byte, maxDepth int) ([]byte, error) {
	return cborToJSON(scratch, b, maxDepth, true)
}

func cborToJSON(dst, b []byte, maxDepth int, check bool) ([]byte, error) {
	if len(b) == 0 || b[0]>>5 != 5 {
		return dst, errors.New("payload must be a CBOR map")
	}
	w := cborWalk{b: b, maxDepth: min(maxDepth, cborMaxNesting), check: check}
	dst, err := w.item(dst, 0)
	if err == nil && w.i != len(b) {
		err = errors.New("malformed CBOR: trailing data")
	}
	return dst, err
}

func cborReason(err error) string {
	s := err.Error()
	if len(s) > 5 && s[:5] == "cbor:" {
		s = s[5:]
	}
	for len(s) > 0 && s[0] == ' ' {
		s = s[1:]
	}
	return s
}

// cborWalk reads CBOR and checks that it is well-formed (RFC 8949 §5.3.1) as it goes: every
// head's additional information, every length against what is left, indefinite lengths only
// where they are allowed; text strings' UTF-8 (each chunk on its own). FuzzCBORToJSON holds it
// to fxamacker/cbor's Wellformed.
type cborWalk struct {
	b        []byte
	i        int
	maxDepth int
	check    bool // CheckCBOR's: only the keys are written
	deepest  int  // the deepest level of a map or array read so far (CBORReader's)
}

var errCBORTruncated = errors.New("malformed CBOR: unexpected end")

// head reads an item's initial byte and argument: its major type, additional info and value.
func (w *cborWalk) head() (major, info byte, arg uint64, err error) {
	if w.i >= len(w.b) {
		return 0, 0, 0, errCBORTruncated
	}
	c := w.b[w.i]
	w.i++
	major, info = c>>5, c&31
	n := 0
	switch {
	case info < 24:
		return major, info, uint64(info), nil
	case info == 24:
		n = 1
	case info == 25:
		n = 2
	case info == 26:
		n = 4
	case info == 27:
		n = 8
	case info == 31:
		return major, info, 0, nil // indefinite length, or break
	default:
		return 0, 0, 0, errors.New("malformed CBOR: reserved additional information")
	}
	if len(w.b)-w.i < n {
		return 0, 0, 0, errCBORTruncated
	}
	for _, c := range w.b[w.i : w.i+n] {
		arg = arg<<8 | uint64(c)
	}
	w.i += n
	return major, info, arg, nil
}

// isBreak reports whether the next byte is the break of an indefinite-length item, and eats it.
func (w *cborWalk) isBreak() bool {
	if w.i < len(w.b) && w.b[w.i] == 0xff {
		w.i++
		return true
	}
	return false
}

// item appends the JSON form of the item at w.i; depth is the level of the enclosing container.
func (w *cborWalk) item(dst []byte, depth int) ([]byte, error) {
	major, info, arg, err := w.head()
	if err != nil {
		return dst, err
	}
	if info == 31 && (major < 2 || major == 6) || major == 7 && (info == 31 || info == 24 && arg < 32) {
		return dst, errors.New("malformed CBOR: bad additional information")
	}
	if w.check { // values are checked, not written
		switch {
		case major < 2 || major == 7 && info >= 20 && info <= 22:
			return dst, nil
		case major == 3:
			return w.text(dst, info, arg, textCheck)
		case major == 7 && info >= 25 && info <= 27:
			if !finite(cborFloat(info, arg)) {
				return dst, errNonFinite
			}
			return dst, nil
		}
	}
	switch major {
	case 0:
		return strconv.AppendUint(dst, arg, 10), nil
	case 1: // -1 - arg
		dst = append(dst, '-')
		if arg == math.MaxUint64 {
			return append(dst, "18446744073709551616"...), nil
		}
		return strconv.AppendUint(dst, arg+1, 10), nil
	case 2:
		return dst, errors.New("CBOR byte strings are not supported: send text")
	case 3:
		return w.text(dst, info, arg, textJSON)
	case 4, 5:
		if depth+1 > w.maxDepth {
			return dst, fmt.Errorf("CBOR nested deeper than %d levels", w.maxDepth)
		}
		w.deepest = max(w.deepest, depth+1)
		return w.container(dst, depth+1, major == 5, info == 31, arg)
	case 6:
		return dst, fmt.Errorf("CBOR tags are not supported (tag %d)", arg)
	}
	switch info { // major 7
	case 20:
		return append(dst, "false"...), nil
	case 21:
		return append(dst, "true"...), nil
	case 22:
		return append(dst, "null"...), nil
	case 23:
		return dst, errors.New("CBOR undefined is not supported: send null")
	case 25, 26:
		return appendFloat(dst, cborFloat(info, arg), 32)
	case 27:
		return appendFloat(dst, cborFloat(info, arg), 64)
	}
	return dst, fmt.Errorf("CBOR simple value %d is not supported", arg)
}

// cborFloat is the value of a half (info 25), single (26) or double (27) float.
func cborFloat(info byte, arg uint64) float64 {
	switch info {
	case 25:
		return float64(float16.Frombits(uint16(arg)).Float32())
	case 26:
		return float64(math.Float32frombits(uint32(arg)))
	}
	return math.Float64frombits(arg)
}

func (w *cborWalk) container(dst []byte, depth int, isMap, indef bool, n uint64) ([]byte, error) {
	open, closeCh := byte('['), byte(']')
	if isMap {
		open, closeCh = '{', '}'
	}
	dst = append(dst, open)
	var keys cborKeys
	for k := uint64(0); indef || k < n; k++ {
		if indef && w.isBreak() {
			break
		}
		if k > 0 {
			dst = append(dst, ',')
		}
		if isMap {
			if w.i >= len(w.b) {
				return dst, errCBORTruncated
			}
			if w.b[w.i]>>5 != 3 {
				return dst, errors.New("CBOR map keys must be text strings")
			}
			start := len(dst)
			_, info, arg, err := w.head()
			if err != nil {
				return dst, err
			}
			if dst, err = w.text(dst, info, arg, textJSON); err != nil { // written even by check
				return dst, err
			}
			if err := keys.add(dst, start, len(dst)); err != nil {
				return dst, err
			}
			dst = append(dst, ':')
		}
		var err error
		if dst, err = w.item(dst, depth); err != nil {
			return dst, err
		}
	}
	return append(dst, closeCh), nil
}

// textMode is what text does with a text string besides checking it.
type textMode uint8

const (
	textCheck textMode = iota // nothing
	textJSON                  // appends it as a JSON string
	textRaw                   // appends its text (CBORReader's keys)
)

// text reads a text string (definite, or indefinite: a sequence of definite chunks), checks it
// and appends it as its mode says.
func (w *cborWalk) text(dst []byte, info byte, n uint64, mode textMode) ([]byte, error) {
	if mode == textJSON {
		dst = append(dst, '"')
	}
	for chunked := info == 31; ; {
		if chunked {
			if w.isBreak() {
				break
			}
			major, cinfo, cn, err := w.head()
			if err != nil {
				return dst, err
			}
			if major != 3 || cinfo == 31 {
				return dst, errors.New("malformed CBOR: bad text string chunk")
			}
			n = cn
		}
		s, err := w.take(n)
		if err != nil {
			return dst, err
		}
		switch mode {
		case textJSON:
			dst = appendJSONString(dst, s)
		case textRaw:
			dst = append(dst, s...)
		}
		if !chunked {
			break
		}
	}
	if mode == textJSON {
		dst = append(dst, '"')
	}
	return dst, nil
}

func (w *cborWalk) take(n uint64) ([]byte, error) {
	if n > uint64(len(w.b)-w.i) {
		return nil, errCBORTruncated
	}
	s := w.b[w.i : w.i+int(n)]
	w.i += int(n)
	if !utf8.Valid(s) {
		return nil, errors.New("malformed CBOR: text string is not UTF-8")
	}
	if bytes.IndexByte(s, 0) >= 0 {
		return nil, errors.New(`NUL (\u0000) in string`)
	}
	return s, nil
}

// cborKeys are the keys of one map so far, as the offsets of their JSON strings in the output
// (a key's JSON form is a function of its text, so equal text is equal bytes): the shadow rules'
// keys nonempty and unique. Up to 8 keys are compared in place, more through a set.
type cborKeys struct {
	n    int
	offs [8][2]int
	set  map[string]struct{}
}

func (k *cborKeys) add(dst []byte, start, end int) error {
	key := dst[start:end]
	if len(key) == 2 { // ""
		return errors.New("empty key")
	}
	if k.set == nil {
		for _, o := range k.offs[:k.n] {
			if string(dst[o[0]:o[1]]) == string(key) {
				return fmt.Errorf("duplicate key %.32s", key)
			}
		}
		if k.n < len(k.offs) {
			k.offs[k.n] = [2]int{start, end}
			k.n++
			return nil
		}
		k.set = make(map[string]struct{}, 2*len(k.offs))
		for _, o := range k.offs {
			k.set[string(dst[o[0]:o[1]])] = struct{}{}
		}
	}
	if _, dup := k.set[string(key)]; dup {
		return fmt.Errorf("duplicate key %.32s", key)
	}
	k.set[string(key)] = struct{}{}
	return nil
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends the UTF-8 text s escaped for the inside of a JSON string: '"', '\'
// and the control characters, nothing else.
func appendJSONString[T string | []byte](dst []byte, s T) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// appendFloat appends f as encoding/json writes a float of that many bits; NaN and the
// infinities are an error.
func appendFloat(dst []byte, f float64, bits int) ([]byte, error) {
	if !finite(f) {
		return dst, errNonFinite
	}
	return AppendJSONNumber(dst, f, bits), nil
}

var errNonFinite = errors.New("NaN and infinity are not supported: JSON has no form for them")

// AppendJSONNumber appends the finite float f as Go's encoding/json writes a float32 (bits 32)
// or float64 (bits 64): the shortest digits that read back as f, in exponent form below 1e-6 and
// from 1e21.
func AppendJSONNumber(dst []byte, f float64, bits int) []byte {
	// A shortcut to what AppendFloat writes, sooner: an integer that is its value's shortest
	// form (below 1e15 as a double, up to 2^24 as a single, where every integer is exact).
	if abs := math.Abs(f); f == math.Trunc(f) && (bits == 64 && abs < 1e15 || abs <= 1<<24) && (f != 0 || !math.Signbit(f)) {
		return strconv.AppendInt(dst, int64(f), 10)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) ||
			bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	dst = strconv.AppendFloat(dst, f, format, -1, bits)
	if format == 'e' { // clean up e-09 to e-9
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// ToJSON appends to dst the JSON object that a payload of Content-Format cf, received at now
// (Unix nanoseconds), stands for and returns it: a JSON payload (50, or none) is returned as it
// is, without copying; a CBOR one (60) is converted (CBORToJSON); a SenML pack (110, 112) becomes
// the object of each name's latest value (senml.go). It returns ErrFormat for any other format.
// The caller applies the JSON rules to the result.
func ToJSON(dst []byte, cf uint16, payload []byte, maxDepth int, now int64) ([]byte, error) {
	switch cf {
	case FormatJSON, NoContentFormat:
		return payload, nil
	case FormatCBOR:
		return CBORToJSON(dst, payload, maxDepth)
	case FormatSenMLJSON, FormatSenMLCBOR:
		rs, err := ParseSenML(nil, cf, payload, now)
		if err != nil {
			return dst, err
		}
		return SenMLToJSON(dst, rs), nil
	}
	return dst, ErrFormat
}

// ErrFormat: a Content-Format a record cannot carry.
var ErrFormat = errors.New("content-format must be 50 (JSON), 60 (CBOR), 110 or 112 (SenML)")

// Accepted reports whether a record may carry a payload of Content-Format cf (none counts as
// JSON).
func Accepted(cf uint16) bool {
	switch cf {
	case FormatJSON, NoContentFormat, FormatCBOR, FormatSenMLJSON, FormatSenMLCBOR:
		return true
	}
	return false
}
