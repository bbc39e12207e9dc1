package ingest

import (
	"errors"
	"fmt"

	"github.com/coapgw/coapgw/internal/jsonscan"
)

// checkJSONObject reports whether b is one JSON object (RFC 8259), valid UTF-8, with objects and
// arrays nested at most maxDepth levels (the top-level object is level 1), that keeps the shadow
// rules (jsonscan/rules.go: numbers within float64's range, no NUL, no unpaired surrogate, keys
// nonempty and unique in their object).
func checkJSONObject(b []byte, maxDepth int) error {
	return scanPayload(b, maxDepth, new(jsonscan.Keys))
}

// scanPayload is checkJSONObject with a reusable key set: it does not allocate once keys has
// grown.
func scanPayload(b []byte, maxDepth int, keys *jsonscan.Keys) error {
	keys.Reset(b)
	p := jsonScan{Scanner: jsonscan.Scanner{B: b}, maxDepth: maxDepth, keys: keys}
	p.WS()
	if p.I >= len(b) || b[p.I] != '{' {
		return errors.New("payload must be a JSON object")
	}
	if err := p.value(0); err != nil {
		return err
	}
	p.WS()
	if p.I != len(b) {
		return p.Errf("trailing data")
	}
	return nil
}

type jsonScan struct {
	jsonscan.Scanner
	maxDepth int
	keys     *jsonscan.Keys
}

func (p *jsonScan) value(depth int) error {
	p.WS()
	if p.I >= len(p.B) {
		return p.Errf("unexpected end")
	}
	switch c := p.B[p.I]; {
	case c == '{' || c == '[':
		if depth+1 > p.maxDepth {
			return fmt.Errorf("JSON nested deeper than %d levels", p.maxDepth)
		}
		return p.container(depth+1, c)
	case c == '"':
		return p.Str()
	case c == 't':
		return p.Lit("true")
	case c == 'f':
		return p.Lit("false")
	case c == 'n':
		return p.Lit("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return p.Num()
	}
	return p.Errf("unexpected %q", p.B[p.I])
}

func (p *jsonScan) container(depth int, open byte) error {
	closeCh := byte('}')
	if open == '[' {
		closeCh = ']'
	}
	p.I++
	p.WS()
	if p.I < len(p.B) && p.B[p.I] == closeCh {
		p.I++
		return nil
	}
	mark := p.keys.Open()
	for {
		if open == '{' {
			p.WS()
			if p.I >= len(p.B) || p.B[p.I] != '"' {
				return p.Errf("object key must be a string")
			}
			start := p.I
			escaped, err := p.StrEsc()
			if err != nil {
				return err
			}
			if err := p.keys.Add(start, p.I, escaped); err != nil {
				return err
			}
			p.WS()
			if p.I >= len(p.B) || p.B[p.I] != ':' {
				return p.Errf("missing ':'")
			}
			p.I++
		}
		if err := p.value(depth); err != nil {
			return err
		}
		p.WS()
		if p.I >= len(p.B) {
			return p.Errf("unexpected end")
		}
		switch p.B[p.I] {
		case ',':
			p.I++
		case closeCh:
			p.I++
			if open == '{' {
				return p.keys.Close(mark)
			}
			return nil
		default:
			return p.Errf("unexpected %q", p.B[p.I])
		}
	}
}
