package record

import (
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/coapgw/coapgw/internal/jsonscan"
)

// senmlFields is one SenML record as read, whatever its format: has says which fields were
// present.
type senmlFields struct {
	has                  uint16
	bver, bt, bv, bs     float64
	v, s, t              float64
	bn, bu, n, u, vs, vd []byte // text as read (unescaped); vd: SenML JSON's base64url text
	vb                   bool
	vdb                  []byte // SenML CBOR's vd: the bytes
	vraw, sraw           []byte // SenML JSON's v and s as read: add parses them when needed
	plain                uint16 // hasVS, hasVD: SenML JSON's vs, vd is plain ASCII (readBytes)
}

// Bits of senmlFields.has.
const (
	hasBVer uint16 = 1 << iota
	hasBN
	hasBT
	hasBU
	hasBV
	hasBS
	hasV
	hasVS
	hasVB
	hasS
	hasVD
	hasVDB
)

// readSenMLJSON reads a SenML JSON pack (RFC 8428 §5) with jsonscan's scanner, handing each
// record to z as it is read: an array of objects whose known fields have the types §5 gives them; unknown
// fields are skipped, a field whose label ends in "_" (must-understand, §4.4) is refused. The
// scanner's rules hold for every string and number (UTF-8, no NUL, numbers within float64).
func readSenMLJSON(b []byte, z *senmlResolver) error {
	p := jsonscan.Scanner{B: b}
	p.WS()
	if p.I >= len(b) || b[p.I] != '[' {
		return fmt.Errorf("invalid SenML JSON: want an array of records")
	}
	p.I++
	p.WS()
	if p.I < len(b) && b[p.I] == ']' {
		p.I++
	} else {
		for i := 0; ; i++ {
			p.WS()
			var r senmlFields
			if err := readSenMLRecord(&p, z, &r, i); err != nil {
				return err
			}
			if err := z.add(i, &r); err != nil {
				return err
			}
			p.WS()
			if p.I >= len(b) {
				return p.Errf("unexpected end")
			}
			if b[p.I] == ']' {
				p.I++
				break
			}
			if b[p.I] != ',' {
				return p.Errf("unexpected %q", b[p.I])
			}
			p.I++
		}
	}
	p.WS()
	if p.I != len(b) {
		return p.Errf("trailing data")
	}
	return nil
}

func readSenMLRecord(p *jsonscan.Scanner, z *senmlResolver, r *senmlFields, i int) error {
	if p.I >= len(p.B) || p.B[p.I] != '{' {
		return fmt.Errorf("invalid SenML JSON: record %d is not an object", i)
	}
	p.I++
	p.WS()
	if p.I < len(p.B) && p.B[p.I] == '}' {
		p.I++
		return nil
	}
	for {
		p.WS()
		if p.I >= len(p.B) || p.B[p.I] != '"' {
			return p.Errf("object key must be a string")
		}
		key, _, err := readBytes(p)
		if err != nil {
			return err
		}
		p.WS()
		if p.I >= len(p.B) || p.B[p.I] != ':' {
			return p.Errf("missing ':'")
		}
		p.I++
		p.WS()
		if err := readSenMLField(p, z, r, key, i); err != nil {
			return err
		}
		p.WS()
		if p.I >= len(p.B) {
			return p.Errf("unexpected end")
		}
		switch p.B[p.I] {
		case ',':
			p.I++
		case '}':
			p.I++
			return nil
		default:
			return p.Errf("unexpected %q", p.B[p.I])
		}
	}
}

func readSenMLField(p *jsonscan.Scanner, z *senmlResolver, r *senmlFields, key []byte, i int) error {
	var num *float64
	var str *[]byte
	var bit uint16
	switch string(key) {
	case "bver":
		num, bit = &r.bver, hasBVer
	case "bt":
		num, bit = &r.bt, hasBT
	case "bv":
		num, bit = &r.bv, hasBV
	case "bs":
		num, bit = &r.bs, hasBS
	case "v":
		num, bit = &r.v, hasV
	case "s":
		num, bit = &r.s, hasS
	case "t":
		num = &r.t
	case "bn":
		str, bit = &r.bn, hasBN
	case "bu":
		str, bit = &r.bu, hasBU
	case "n":
		str = &r.n
	case "u":
		str = &r.u
	case "vs":
		str, bit = &r.vs, hasVS
	case "vd":
		str, bit = &r.vd, hasVD
	case "vb":
		r.has |= hasVB
		switch {
		case p.I < len(p.B) && p.B[p.I] == 't':
			r.vb = true
			return p.Lit("true")
		case p.I < len(p.B) && p.B[p.I] == 'f':
			r.vb = false
			return p.Lit("false")
		}
		return fmt.Errorf("invalid SenML JSON: record %d: vb must be a boolean", i)
	default:
		if len(key) > 0 && key[len(key)-1] == '_' {
			return fmt.Errorf("SenML record %d: must-understand field %.32q not supported", i, key)
		}
		return skipJSON(p, 0)
	}
	r.has |= bit
	if num != nil {
		if p.I >= len(p.B) || p.B[p.I] != '-' && (p.B[p.I] < '0' || p.B[p.I] > '9') {
			return fmt.Errorf("invalid SenML JSON: record %d: %s must be a number", i, key)
		}
		start := p.I
		if err := p.Num(); err != nil {
			return err
		}
		if bit == hasV || bit == hasS { // parsed by add, when needed (Num checked the range)
			if bit == hasV {
				r.vraw = p.B[start:p.I]
			} else {
				r.sraw = p.B[start:p.I]
			}
			return nil
		}
		f, err := strconv.ParseFloat(string(p.B[start:p.I]), 64)
		if err != nil { // Num checked the range
			return p.Errf("bad number")
		}
		*num = f
		return nil
	}
	if p.I >= len(p.B) || p.B[p.I] != '"' {
		return fmt.Errorf("invalid SenML JSON: record %d: %s must be a string", i, key)
	}
	b, plain, err := readBytes(p)
	*str = b
	if plain {
		r.plain |= bit
	} else {
		r.plain &^= bit
	}
	return err
}

// readBytes reads the string at p.I, unescaped: in place when it has no escape; plain when it is
// printable ASCII without a backslash.
func readBytes(p *jsonscan.Scanner) (s []byte, plain bool, err error) {
	start := p.I
	// Plain ASCII, as labels and most names and text are: what StrEsc would check, in a loop
	// over locals.
	for i, b := start+1, p.B; i < len(b); i++ {
		c := b[i]
		if c == '"' {
			p.I = i + 1
			return b[start+1 : i], true, nil
		}
		if c < 0x20 || c == '\\' || c >= utf8.RuneSelf {
			break
		}
	}
	escaped, err := p.StrEsc()
	if err != nil {
		return nil, false, err
	}
	raw := p.B[start:p.I]
	if !escaped {
		return raw[1 : len(raw)-1], false, nil
	}
	var u string
	if err := json.Unmarshal(raw, &u); err != nil {
		return nil, false, p.Errf("bad string: %v", err)
	}
	return []byte(u), false, nil
}

// skipJSON skips the value at p.I (an unknown field's), nested at most 8 levels.
func skipJSON(p *jsonscan.Scanner, depth int) error {
	if p.I >= len(p.B) {
		return p.Errf("unexpected end")
	}
	switch c := p.B[p.I]; {
	case c == '"':
		return p.Str()
	case c == 't':
		return p.Lit("true")
	case c == 'f':
		return p.Lit("false")
	case c == 'n':
		return p.Lit("null")
	case c == '-' || c >= '0' && c <= '9':
		return p.Num()
	case c == '{' || c == '[':
		if depth >= 8 {
			return p.Errf("nested too deep")
		}
		closeCh := byte(']')
		if c == '{' {
			closeCh = '}'
		}
		p.I++
		p.WS()
		if p.I < len(p.B) && p.B[p.I] == closeCh {
			p.I++
			return nil
		}
		for {
			p.WS()
			if c == '{' {
				if p.I >= len(p.B) || p.B[p.I] != '"' {
					return p.Errf("object key must be a string")
				}
				if err := p.Str(); err != nil {
					return err
				}
				p.WS()
				if p.I >= len(p.B) || p.B[p.I] != ':' {
					return p.Errf("missing ':'")
				}
				p.I++
				p.WS()
			}
			if err := skipJSON(p, depth+1); err != nil {
				return err
			}
			p.WS()
			if p.I >= len(p.B) {
				return p.Errf("unexpected end")
			}
			if p.B[p.I] == closeCh {
				p.I++
				return nil
			}
			if p.B[p.I] != ',' {
				return p.Errf("unexpected %q", p.B[p.I])
			}
			p.I++
		}
	}
	return p.Errf("unexpected %q", p.B[p.I])
}

// shortestNumber reports whether t, a JSON number's text (jsonscan-checked), is what
// AppendJSONNumber writes for its value, so that it can be copied: no exponent, no trailing zero
// in a fraction, at most 15 significant digits (every such decimal is its float64's shortest
// form), not below 1e-6 unless zero, and not -0 (which a base value of +0 turns into 0).
func shortestNumber(t []byte) bool {
	neg := len(t) > 0 && t[0] == '-'
	if neg {
		t = t[1:]
	}
	if len(t) == 0 || t[len(t)-1] == '.' {
		return false
	}
	if len(t) == 1 && t[0] == '0' {
		return !neg
	}
	digits, leadZeros, point, started := 0, 0, false, false
	for _, c := range t {
		switch {
		case c == '.':
			point = true
		case c == '0' && !started:
			if point {
				leadZeros++
			}
		case c >= '0' && c <= '9':
			started = true
			digits++
		default:
			return false // an exponent
		}
	}
	if point && t[len(t)-1] == '0' {
		return false
	}
	return digits <= 15 && leadZeros < 6
}
