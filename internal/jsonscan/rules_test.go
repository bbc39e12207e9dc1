package jsonscan

import (
	"errors"
	"strings"
	"testing"
)

// scanValue runs Num or Str on the single JSON value v, as a reader would.
func scanValue(v string) error {
	s := Scanner{B: []byte(v)}
	if v[0] == '"' {
		return s.Str()
	}
	if err := s.Num(); err != nil {
		return err
	}
	if s.I != len(v) {
		return s.Errf("trailing data")
	}
	return nil
}

// TestShadowRuleValues: numbers beyond float64 (overflow, or a nonzero number rounding to zero),
// NUL and unpaired surrogate escapes are *RuleError; the values next to them are accepted.
func TestShadowRuleValues(t *testing.T) {
	good := []string{`0`, `-0.0e-999`, `1.7976931348623157e308`, `4.9e-324`, `-1e308`, `123456789012345678901234567890`,
		`0.` + strings.Repeat("0", 320) + `1`, // 1e-321: subnormal, not zero
		`"a\u0001b"`, `"\ud83d\ude00"`, `"\u00e9"`, `"\\u0000"`, `""`}
	for _, v := range good {
		if err := scanValue(v); err != nil {
			t.Errorf("%s: %v", v, err)
		}
	}
	bad := []string{`1e400`, `-1e400`, `1e-400`, `2e308`, `1` + strings.Repeat("0", 400), `0.` + strings.Repeat("0", 400) + `1`,
		`"\u0000"`, `"a\u0000"`, `"\ud800"`, `"\ud800x"`, `"\ud800\u0041"`, `"\udc00"`, `"\ud800\ud800"`}
	for _, v := range bad {
		err := scanValue(v)
		var re *RuleError
		if !errors.As(err, &re) {
			t.Errorf("%.40s: %v, want a *RuleError", v, err)
		}
	}
}

// TestKeys: empty keys and keys repeated in one object (after unescaping, also with many keys,
// which sorts) are *RuleError; the same key in different objects is not.
func TestKeys(t *testing.T) {
	many := func(extra string) string {
		var b strings.Builder
		b.WriteString(`{`)
		for i := range 40 {
			if i > 0 {
				b.WriteString(`,`)
			}
			b.WriteString(`"k` + strings.Repeat("x", i) + `":1`)
		}
		return b.String() + extra + `}`
	}
	cases := []struct {
		doc string
		ok  bool
	}{
		{`{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}`, true},
		{`{"a":1,"a":2}`, false},
		{`{"a":1,"\u0061":2}`, false},
		{`{"\u00e9":1,"é":2}`, false},
		{`{"\ud83d\ude00":1,"😀":2}`, false},
		{`{"a\/b":1,"a/b":2}`, false},
		{`{"":1}`, false},
		{`{"b":{"":1}}`, false},
		{many(``), true},
		{many(`,"kxxx":2`), false},
		{many(`,"k\u0078":2`), false},
	}
	var k Keys
	for _, c := range cases {
		err := checkKeys(&k, c.doc)
		var re *RuleError
		if c.ok && err != nil || !c.ok && !errors.As(err, &re) {
			t.Errorf("%.60s: %v, want ok=%v", c.doc, err, c.ok)
		}
	}
}

// checkKeys walks the objects of doc (flat enough for the cases above: strings, numbers,
// objects and arrays) with k.
func checkKeys(k *Keys, doc string) error {
	k.Reset([]byte(doc))
	s := Scanner{B: []byte(doc)}
	var marks []int
	var inObj []bool
	expectKey := false
	for s.I < len(s.B) {
		switch c := s.B[s.I]; {
		case c == '{':
			marks, inObj = append(marks, k.Open()), append(inObj, true)
			expectKey = true
			s.I++
		case c == '[':
			marks, inObj = append(marks, -1), append(inObj, false)
			s.I++
		case c == '}':
			if err := k.Close(marks[len(marks)-1]); err != nil {
				return err
			}
			marks, inObj = marks[:len(marks)-1], inObj[:len(inObj)-1]
			s.I++
		case c == ']':
			marks, inObj = marks[:len(marks)-1], inObj[:len(inObj)-1]
			s.I++
		case c == ',':
			expectKey = inObj[len(inObj)-1]
			s.I++
		case c == ':':
			s.I++
		case c == '"':
			start := s.I
			esc, err := s.StrEsc()
			if err != nil {
				return err
			}
			if expectKey {
				if err := k.Add(start, s.I, esc); err != nil {
					return err
				}
				expectKey = false
			}
		default:
			if err := s.Num(); err != nil {
				return err
			}
		}
	}
	return nil
}
