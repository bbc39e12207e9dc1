package processor

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/coapgw/coapgw/internal/record"
)

// ContentFormatJSON is CoAP's Content-Format number for application/json.
const ContentFormatJSON = 50

// A Decoder turns a record's payload into properties. Every leaf of the returned document gets the
// time ts (the record's received_at, Unix nanoseconds). An error means the payload can never be
// decoded: the record is set aside with the error as its reason.
type Decoder interface {
	Decode(payload []byte, ts int64) (*Doc, error)
}

// DecoderFunc adapts a function to Decoder.
type DecoderFunc func(payload []byte, ts int64) (*Doc, error)

// Decode calls f.
func (f DecoderFunc) Decode(payload []byte, ts int64) (*Doc, error) { return f(payload, ts) }

// Decoders maps a CoAP Content-Format number to its decoder; record.NoContentFormat is the key
// for a request that had none.
type Decoders map[uint16]Decoder

// DefaultDecoders decodes JSON objects, with Content-Format 50 or none. CBOR (60) and SenML
// (110, 112) will be added here.
func DefaultDecoders() Decoders {
	return Decoders{
		ContentFormatJSON:      DecoderFunc(DecodeJSON),
		record.NoContentFormat: DecoderFunc(DecodeJSON),
	}
}

// DecodeJSON decodes a payload that must be one JSON object (RFC 8259, UTF-8) nested at most
// MaxShadowDepth levels. Arrays are kept as values, compacted; null members become deletions.
func DecodeJSON(payload []byte, ts int64) (*Doc, error) {
	p := parser{b: payload, maxDepth: MaxShadowDepth}
	p.ws()
	if p.i >= len(p.b) || p.b[p.i] != '{' {
		return nil, errors.New("payload must be a JSON object")
	}
	d := &Doc{}
	if err := p.object(&d.root, 0, ts); err != nil {
		return nil, err
	}
	p.ws()
	if p.i != len(p.b) {
		return nil, p.errf("trailing data")
	}
	return d, nil
}

// parser reads JSON; object builds a document, skip only validates.
type parser struct {
	b        []byte
	i        int
	maxDepth int
}

func (p *parser) errf(format string, args ...any) error {
	return fmt.Errorf("invalid JSON at byte %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *parser) depthErr() error {
	return fmt.Errorf("JSON nested deeper than %d levels", p.maxDepth)
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// object parses the object at p.i into n; depth is the level of the enclosing container.
func (p *parser) object(n *node, depth int, ts int64) error {
	if depth++; depth > p.maxDepth {
		return p.depthErr()
	}
	n.kind = kindObject
	p.i++ // '{'
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return nil
	}
	sorted := true
	for {
		p.ws()
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return p.errf("object key must be a string")
		}
		key, err := p.key()
		if err != nil {
			return err
		}
		p.ws()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return p.errf("missing ':'")
		}
		p.i++
		p.ws()
		if p.i >= len(p.b) {
			return p.errf("unexpected end")
		}
		m := member{key: key}
		switch c := p.b[p.i]; c {
		case '{':
			if err := p.object(&m.node, depth, ts); err != nil {
				return err
			}
		case 'n':
			if err := p.lit("null"); err != nil {
				return err
			}
			m.node = node{kind: kindDeleted, ts: ts}
		default:
			start := p.i
			d, err := p.skip(depth)
			if err != nil {
				return err
			}
			m.node = node{kind: kindValue, ts: ts, val: p.b[start:p.i:p.i]}
			if c == '[' {
				m.val = compact(m.val)
				m.depth = uint8(d - depth)
			}
		}
		if k := len(n.kids); k > 0 && n.kids[k-1].key >= key {
			sorted = false
		}
		n.kids = append(n.kids, m)
		p.ws()
		if p.i >= len(p.b) {
			return p.errf("unexpected end")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			if !sorted {
				n.kids = sortMembers(n.kids)
			}
			return nil
		default:
			return p.errf("unexpected %q", p.b[p.i])
		}
	}
}

// sortMembers sorts by key; of duplicate keys the last one wins, as in most JSON decoders.
func sortMembers(kids []member) []member {
	slices.SortStableFunc(kids, func(a, b member) int { return cmp.Compare(a.key, b.key) })
	out := kids[:0]
	for i, m := range kids {
		if i+1 < len(kids) && kids[i+1].key == m.key {
			continue
		}
		out = append(out, m)
	}
	return out
}

// skip validates the value at p.i and returns the deepest container level reached (depth for a
// scalar).
func (p *parser) skip(depth int) (int, error) {
	if p.i >= len(p.b) {
		return 0, p.errf("unexpected end")
	}
	switch c := p.b[p.i]; {
	case c == '{' || c == '[':
		return p.container(depth+1, c)
	case c == '"':
		return depth, p.str()
	case c == 't':
		return depth, p.lit("true")
	case c == 'f':
		return depth, p.lit("false")
	case c == 'n':
		return depth, p.lit("null")
	case c == '-' || c >= '0' && c <= '9':
		return depth, p.num()
	}
	return 0, p.errf("unexpected %q", p.b[p.i])
}

func (p *parser) container(depth int, open byte) (int, error) {
	if depth > p.maxDepth {
		return 0, p.depthErr()
	}
	closeCh := byte('}')
	if open == '[' {
		closeCh = ']'
	}
	deepest := depth
	p.i++
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == closeCh {
		p.i++
		return deepest, nil
	}
	for {
		p.ws()
		if open == '{' {
			if p.i >= len(p.b) || p.b[p.i] != '"' {
				return 0, p.errf("object key must be a string")
			}
			if err := p.str(); err != nil {
				return 0, err
			}
			p.ws()
			if p.i >= len(p.b) || p.b[p.i] != ':' {
				return 0, p.errf("missing ':'")
			}
			p.i++
			p.ws()
		}
		d, err := p.skip(depth)
		if err != nil {
			return 0, err
		}
		deepest = max(deepest, d)
		p.ws()
		if p.i >= len(p.b) {
			return 0, p.errf("unexpected end")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case closeCh:
			p.i++
			return deepest, nil
		default:
			return 0, p.errf("unexpected %q", p.b[p.i])
		}
	}
}

func (p *parser) lit(s string) error {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return p.errf("bad literal")
	}
	p.i += len(s)
	return nil
}

func (p *parser) digits() int {
	n := 0
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}

func (p *parser) num() error {
	if p.b[p.i] == '-' {
		p.i++
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if p.digits() == 0 {
		return p.errf("bad number")
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return p.errf("bad number")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return p.errf("bad number")
		}
	}
	return nil
}

// str validates the string at p.i and reports whether it contains an escape.
func (p *parser) str() error {
	_, err := p.strEsc()
	return err
}

func (p *parser) strEsc() (escaped bool, err error) {
	p.i++ // opening quote
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return escaped, nil
		case c == '\\':
			escaped = true
			p.i++
			if p.i >= len(p.b) {
				return false, p.errf("unterminated string")
			}
			switch p.b[p.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i++
			case 'u':
				if len(p.b)-p.i < 5 {
					return false, p.errf("bad \\u escape")
				}
				for _, h := range p.b[p.i+1 : p.i+5] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return false, p.errf("bad \\u escape")
					}
				}
				p.i += 5
			default:
				return false, p.errf("bad escape")
			}
		case c < 0x20:
			return false, p.errf("control character in string")
		case c < utf8.RuneSelf:
			p.i++
		default:
			r, n := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && n <= 1 {
				return false, p.errf("invalid UTF-8")
			}
			p.i += n
		}
	}
	return false, p.errf("unterminated string")
}

// key parses an object key and returns it unescaped.
func (p *parser) key() (string, error) {
	start := p.i
	escaped, err := p.strEsc()
	if err != nil {
		return "", err
	}
	raw := p.b[start:p.i]
	if !escaped {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", p.errf("bad key: %v", err)
	}
	return strings.ToValidUTF8(s, "\uFFFD"), nil
}

// compact removes insignificant whitespace from valid JSON, returning v itself when there is none.
func compact(v []byte) []byte {
	var out []byte
	inStr, esc := false, false
	for i, c := range v {
		if inStr {
			if esc {
				esc = false
			} else if c == '\\' {
				esc = true
			} else if c == '"' {
				inStr = false
			}
		} else if c == '"' {
			inStr = true
		} else if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			if out == nil {
				out = append(make([]byte, 0, len(v)), v[:i]...)
			}
			continue
		}
		if out != nil {
			out = append(out, c)
		}
	}
	if out == nil {
		return v
	}
	return out
}
