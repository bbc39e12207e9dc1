package processor

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/coapgw/coapgw/internal/jsonscan"

	"github.com/coapgw/coapgw/internal/record"
)

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

// DefaultDecoders decodes JSON objects, with Content-Format 50 or none, CBOR maps (60) and SenML
// packs (110 JSON, 112 CBOR).
func DefaultDecoders() Decoders {
	return Decoders{
		record.FormatJSON:      DecoderFunc(DecodeJSON),
		record.NoContentFormat: DecoderFunc(DecodeJSON),
		record.FormatCBOR:      DecoderFunc(DecodeCBOR),
		record.FormatSenMLJSON: SenMLDecoder(record.FormatSenMLJSON),
		record.FormatSenMLCBOR: SenMLDecoder(record.FormatSenMLCBOR),
	}
}

// DecodeJSON decodes a payload that must be one JSON object (RFC 8259, UTF-8) nested at most
// MaxShadowDepth levels that keeps the shadow rules (jsonscan's: numbers within float64's range,
// no NUL, no unpaired surrogate, keys nonempty and unique in their object; breaking one is a
// *jsonscan.RuleError), as the device API checks them. Arrays are kept as values, compacted;
// null members become deletions.
func DecodeJSON(payload []byte, ts int64) (*Doc, error) {
	p := parser{Scanner: jsonscan.Scanner{B: payload}, maxDepth: MaxShadowDepth}
	p.WS()
	if p.I >= len(p.B) || p.B[p.I] != '{' {
		return nil, errors.New("payload must be a JSON object")
	}
	d := &Doc{}
	if err := p.object(&d.root, 0, ts); err != nil {
		return nil, err
	}
	p.WS()
	if p.I != len(p.B) {
		return nil, p.Errf("trailing data")
	}
	return d, nil
}

// parser reads JSON; object builds a document, skip only validates.
type parser struct {
	jsonscan.Scanner
	maxDepth int
}

func (p *parser) depthErr() error {
	return fmt.Errorf("JSON nested deeper than %d levels", p.maxDepth)
}

// object parses the object at p.I into n; depth is the level of the enclosing container.
func (p *parser) object(n *node, depth int, ts int64) error {
	if depth++; depth > p.maxDepth {
		return p.depthErr()
	}
	n.kind = kindObject
	open := p.I
	p.I++ // '{'
	p.WS()
	if p.I < len(p.B) && p.B[p.I] == '}' {
		p.I++
		return nil
	}
	sorted := true
	for {
		p.WS()
		if p.I >= len(p.B) || p.B[p.I] != '"' {
			return p.Errf("object key must be a string")
		}
		start := p.I
		key, err := p.key()
		if err != nil {
			return err
		}
		if key == "" {
			return &jsonscan.RuleError{Off: start, Msg: "empty key"}
		}
		p.WS()
		if p.I >= len(p.B) || p.B[p.I] != ':' {
			return p.Errf("missing ':'")
		}
		p.I++
		p.WS()
		if p.I >= len(p.B) {
			return p.Errf("unexpected end")
		}
		m := member{key: key}
		switch c := p.B[p.I]; c {
		case '{':
			if err := p.object(&m.node, depth, ts); err != nil {
				return err
			}
		case 'n':
			if err := p.Lit("null"); err != nil {
				return err
			}
			m.node = node{kind: kindDeleted, ts: ts}
		default:
			start := p.I
			d, err := p.skip(depth)
			if err != nil {
				return err
			}
			m.node = node{kind: kindValue, ts: ts, val: p.B[start:p.I:p.I]}
			if c == '[' {
				m.val = compact(m.val)
				m.depth = uint8(d - depth)
			}
		}
		if k := len(n.kids); k > 0 && n.kids[k-1].key >= key {
			sorted = false
		}
		n.kids = append(n.kids, m)
		p.WS()
		if p.I >= len(p.B) {
			return p.Errf("unexpected end")
		}
		switch p.B[p.I] {
		case ',':
			p.I++
		case '}':
			p.I++
			if !sorted {
				var dup string
				if n.kids, dup = sortMembers(n.kids); dup != "" {
					return &jsonscan.RuleError{Off: open, Msg: fmt.Sprintf("duplicate key %q", dup)}
				}
			}
			return nil
		default:
			return p.Errf("unexpected %q", p.B[p.I])
		}
	}
}

// sortMembers sorts by key; it returns a key that appears twice, if one does.
func sortMembers(kids []member) ([]member, string) {
	slices.SortFunc(kids, func(a, b member) int { return cmp.Compare(a.key, b.key) })
	for i := 1; i < len(kids); i++ {
		if kids[i].key == kids[i-1].key {
			return kids, kids[i].key
		}
	}
	return kids, ""
}

// skip validates the value at p.I and returns the deepest container level reached (depth for a
// scalar).
func (p *parser) skip(depth int) (int, error) {
	if p.I >= len(p.B) {
		return 0, p.Errf("unexpected end")
	}
	switch c := p.B[p.I]; {
	case c == '{' || c == '[':
		return p.container(depth+1, c)
	case c == '"':
		return depth, p.Str()
	case c == 't':
		return depth, p.Lit("true")
	case c == 'f':
		return depth, p.Lit("false")
	case c == 'n':
		return depth, p.Lit("null")
	case c == '-' || c >= '0' && c <= '9':
		return depth, p.Num()
	}
	return 0, p.Errf("unexpected %q", p.B[p.I])
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
	p.I++
	p.WS()
	if p.I < len(p.B) && p.B[p.I] == closeCh {
		p.I++
		return deepest, nil
	}
	for {
		p.WS()
		if open == '{' {
			if p.I >= len(p.B) || p.B[p.I] != '"' {
				return 0, p.Errf("object key must be a string")
			}
			if err := p.Str(); err != nil {
				return 0, err
			}
			p.WS()
			if p.I >= len(p.B) || p.B[p.I] != ':' {
				return 0, p.Errf("missing ':'")
			}
			p.I++
			p.WS()
		}
		d, err := p.skip(depth)
		if err != nil {
			return 0, err
		}
		deepest = max(deepest, d)
		p.WS()
		if p.I >= len(p.B) {
			return 0, p.Errf("unexpected end")
		}
		switch p.B[p.I] {
		case ',':
			p.I++
		case closeCh:
			p.I++
			return deepest, nil
		default:
			return 0, p.Errf("unexpected %q", p.B[p.I])
		}
	}
}

// key parses an object key and returns it unescaped.
func (p *parser) key() (string, error) {
	start := p.I
	escaped, err := p.StrEsc()
	if err != nil {
		return "", err
	}
	raw := p.B[start:p.I]
	if !escaped {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", p.Errf("bad key: %v", err)
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
