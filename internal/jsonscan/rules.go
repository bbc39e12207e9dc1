package jsonscan

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// The shadow rules. AWS IoT's Device Shadow service documents that it "respects all rules of the
// JSON specification" and stores values, objects and arrays, but not what it does with what RFC
// 8259 leaves open: duplicate keys (RFC 8259 §4: names "SHOULD be unique", parsers differ on
// which one wins), empty keys, NUL characters, surrogate escapes that do not form a pair (§8.2:
// "unpredictable" behaviour), and numbers beyond what an IEEE 754 double holds (§6). Where AWS
// does not say, the device API refuses rather than guess what AWS, or whatever reads the shadow
// after it, would do:
//
//   - a number must be a finite float64, and a nonzero number must not round to zero (Num);
//   - a string or key must not contain U+0000, and a \uXXXX surrogate escape must be half of a
//     pair (Str, StrEsc); raw bytes must be UTF-8, as before;
//   - keys must be nonempty and unique within their object, compared after unescaping, so that
//     "a" and "\u0061" are the same key (Keys).
//
// Breaking one of them is a *RuleError, so that a caller can tell it from invalid JSON.

// RuleError is valid JSON that breaks a shadow rule.
type RuleError struct {
	Off int    // byte offset in the document
	Msg string // what is wrong, e.g. "number out of range"
}

func (e *RuleError) Error() string { return fmt.Sprintf("%s at byte %d", e.Msg, e.Off) }

// inRange reports whether the number literal num (valid RFC 8259 syntax) is a finite float64 and,
// if any of its mantissa digits is nonzero, not rounded to zero.
func inRange(num []byte) bool {
	f, err := strconv.ParseFloat(string(num), 64)
	if err != nil {
		return false // ErrRange: ±Inf
	}
	if f != 0 {
		return true
	}
	for _, c := range num {
		switch {
		case c == 'e' || c == 'E':
			return true // the mantissa was all zeros: a true zero
		case c >= '1' && c <= '9':
			return false // underflow
		}
	}
	return true
}

// unicodeEscape consumes a \uXXXX escape, and the low half that must follow a high surrogate;
// s.I is at the 'u'.
func (s *Scanner) unicodeEscape() error {
	r, ok := hex4(s.B, s.I+1)
	if !ok {
		return s.Errf("bad \\u escape")
	}
	switch {
	case r == 0:
		return &RuleError{Off: s.I - 1, Msg: `NUL (\u0000) in string`}
	case utf16.IsSurrogate(r) && r >= 0xDC00:
		return &RuleError{Off: s.I - 1, Msg: "unpaired surrogate escape"}
	case utf16.IsSurrogate(r):
		lo, ok := rune(0), len(s.B)-s.I >= 7 && s.B[s.I+5] == '\\' && s.B[s.I+6] == 'u'
		if ok {
			lo, ok = hex4(s.B, s.I+7)
		}
		if !ok || lo < 0xDC00 || lo > 0xDFFF {
			return &RuleError{Off: s.I - 1, Msg: "unpaired surrogate escape"}
		}
		s.I += 6
	}
	s.I += 5
	return nil
}

// hex4 decodes the four hex digits at b[i:], false if there are not four.
func hex4(b []byte, i int) (rune, bool) {
	if len(b)-i < 4 {
		return 0, false
	}
	var r rune
	for _, h := range b[i : i+4] {
		switch {
		case h >= '0' && h <= '9':
			h -= '0'
		case h >= 'a' && h <= 'f':
			h -= 'a' - 10
		case h >= 'A' && h <= 'F':
			h -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(h)
	}
	return r, true
}

// Keys checks that the keys of each object are nonempty and unique. A reader calls Open when it
// enters an object, Add for each key, and Close when it leaves the object; nested objects stack.
// A Keys is reused across documents (Reset) so that checking allocates nothing once its buffers
// have grown.
type Keys struct {
	src  []byte // the document of the keys added
	keys []keySpan
	dec  []byte // unescaped keys
}

// keySpan is a key: src[a:b] (the raw key without quotes), or dec[a:b] if it was unescaped.
type keySpan struct {
	off, a, b int // off: the key's offset in src
	dec       bool
}

// Reset forgets everything and makes src the document whose keys are added.
func (k *Keys) Reset(src []byte) {
	k.src, k.keys, k.dec = src, k.keys[:0], k.dec[:0]
}

// Open starts an object and returns its mark, for Close.
func (k *Keys) Open() int { return len(k.keys) }

// Add adds the key that spans src[start:end] (quotes included), escaped if it contains an
// escape (as StrEsc reported); it must be valid (StrEsc accepted it).
func (k *Keys) Add(start, end int, escaped bool) error {
	if end-start == 2 {
		return &RuleError{Off: start, Msg: "empty key"}
	}
	if !escaped {
		k.keys = append(k.keys, keySpan{off: start, a: start + 1, b: end - 1})
		return nil
	}
	from := len(k.dec)
	k.dec = unescape(k.dec, k.src[start+1:end-1])
	k.keys = append(k.keys, keySpan{off: start, a: from, b: len(k.dec), dec: true})
	return nil
}

func (k *Keys) key(s keySpan) []byte {
	if s.dec {
		return k.dec[s.a:s.b]
	}
	return k.src[s.a:s.b]
}

// Close ends the object opened at mark: an error names a key that appears twice in it.
func (k *Keys) Close(mark int) error {
	keys := k.keys[mark:]
	defer func() { k.keys = k.keys[:mark] }()
	if len(keys) <= 16 { // few keys: compare each pair
		for i := 1; i < len(keys); i++ {
			ki := k.key(keys[i])
			for j := range i {
				if bytes.Equal(ki, k.key(keys[j])) {
					return dupErr(ki, keys[i])
				}
			}
		}
		return nil
	}
	slices.SortFunc(keys, func(a, b keySpan) int { return bytes.Compare(k.key(a), k.key(b)) })
	for i := 1; i < len(keys); i++ {
		if ki := k.key(keys[i]); bytes.Equal(ki, k.key(keys[i-1])) {
			return dupErr(ki, keys[i])
		}
	}
	return nil
}

func dupErr(key []byte, s keySpan) error {
	if len(key) > 24 {
		key = key[:24]
	}
	return &RuleError{Off: s.off, Msg: fmt.Sprintf("duplicate key %q", key)}
}

// unescape appends the unescaped form of the body of a valid JSON string.
func unescape(dst, s []byte) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		switch s[i] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, _ := hex4(s, i+1)
			i += 4
			if utf16.IsSurrogate(r) && i+6 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
				lo, _ := hex4(s, i+3)
				r = utf16.DecodeRune(r, lo)
				i += 6
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/'
			dst = append(dst, s[i])
		}
	}
	return dst
}
