// Package jsonscan holds the lexical pieces of a strict JSON (RFC 8259) reader: whitespace,
// literals, numbers and strings (escapes checked, UTF-8 validated). The device API's validator
// and the processor's decoder build their grammar on it, so both accept exactly the same text,
// and it enforces AWS IoT's shadow rules on values, the same for both (rules.go); Keys checks
// that keys are nonempty and unique.
// Nothing here allocates except the error values.
package jsonscan

import (
	"fmt"
	"unicode/utf8"
)

// Scanner reads B from offset I.
type Scanner struct {
	B []byte
	I int
}

// Errf returns an error located at the current offset.
func (s *Scanner) Errf(format string, args ...any) error {
	return fmt.Errorf("invalid JSON at byte %d: %s", s.I, fmt.Sprintf(format, args...))
}

// WS skips whitespace.
func (s *Scanner) WS() {
	for s.I < len(s.B) {
		switch s.B[s.I] {
		case ' ', '\t', '\n', '\r':
			s.I++
		default:
			return
		}
	}
}

// Lit consumes the literal lit (true, false, null).
func (s *Scanner) Lit(lit string) error {
	if len(s.B)-s.I < len(lit) || string(s.B[s.I:s.I+len(lit)]) != lit {
		return s.Errf("bad literal")
	}
	s.I += len(lit)
	return nil
}

func (s *Scanner) digits() int {
	n := 0
	for s.I < len(s.B) && s.B[s.I] >= '0' && s.B[s.I] <= '9' {
		s.I++
		n++
	}
	return n
}

// Num consumes a number; the caller has seen '-' or a digit at I. Besides RFC 8259's grammar it
// enforces the shadow rule on range (see rules.go): a number must be a finite float64 and a
// nonzero one must not round to zero.
func (s *Scanner) Num() error {
	start := s.I
	if s.B[s.I] == '-' {
		s.I++
	}
	if s.I < len(s.B) && s.B[s.I] == '0' {
		s.I++
	} else if s.digits() == 0 {
		return s.Errf("bad number")
	}
	if s.I < len(s.B) && s.B[s.I] == '.' {
		s.I++
		if s.digits() == 0 {
			return s.Errf("bad number")
		}
	}
	exp := false
	if s.I < len(s.B) && (s.B[s.I] == 'e' || s.B[s.I] == 'E') {
		exp = true
		s.I++
		if s.I < len(s.B) && (s.B[s.I] == '+' || s.B[s.I] == '-') {
			s.I++
		}
		if s.digits() == 0 {
			return s.Errf("bad number")
		}
	}
	// Without an exponent, fewer than 300 characters can neither overflow (beyond 1.8e308) nor
	// underflow (below 4.9e-324): the common case costs no conversion.
	if !exp && s.I-start < 300 {
		return nil
	}
	if !inRange(s.B[start:s.I]) {
		return &RuleError{Off: start, Msg: "number out of range"}
	}
	return nil
}

// Str consumes a string; the caller has seen '"' at I. Besides RFC 8259's grammar it enforces
// the shadow rules on text (see rules.go): no NUL (\u0000) and no unpaired surrogate escape.
func (s *Scanner) Str() error {
	_, err := s.StrEsc()
	return err
}

// StrEsc consumes a string and reports whether it contains an escape.
func (s *Scanner) StrEsc() (escaped bool, err error) {
	s.I++ // opening quote
	for s.I < len(s.B) {
		c := s.B[s.I]
		switch {
		case c == '"':
			s.I++
			return escaped, nil
		case c == '\\':
			escaped = true
			s.I++
			if s.I >= len(s.B) {
				return false, s.Errf("unterminated string")
			}
			switch s.B[s.I] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.I++
			case 'u':
				if err := s.unicodeEscape(); err != nil {
					return false, err
				}
			default:
				return false, s.Errf("bad escape")
			}
		case c < 0x20:
			return false, s.Errf("control character in string")
		case c < utf8.RuneSelf:
			s.I++
		default:
			r, n := utf8.DecodeRune(s.B[s.I:])
			if r == utf8.RuneError && n <= 1 {
				return false, s.Errf("invalid UTF-8")
			}
			s.I += n
		}
	}
	return false, s.Errf("unterminated string")
}
