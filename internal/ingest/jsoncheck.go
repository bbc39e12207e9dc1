package ingest

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// checkJSONObject reports whether b is one JSON object (RFC 8259), valid UTF-8, with objects and
// arrays nested at most maxDepth levels (the top-level object is level 1). It does not allocate.
func checkJSONObject(b []byte, maxDepth int) error {
	p := jsonScan{b: b, maxDepth: maxDepth}
	p.ws()
	if p.i >= len(b) || b[p.i] != '{' {
		return errors.New("payload must be a JSON object")
	}
	if err := p.value(0); err != nil {
		return err
	}
	p.ws()
	if p.i != len(b) {
		return p.errf("trailing data")
	}
	return nil
}

type jsonScan struct {
	b        []byte
	i        int
	maxDepth int
}

func (p *jsonScan) errf(format string, args ...any) error {
	return fmt.Errorf("invalid JSON at byte %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *jsonScan) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonScan) value(depth int) error {
	p.ws()
	if p.i >= len(p.b) {
		return p.errf("unexpected end")
	}
	switch c := p.b[p.i]; {
	case c == '{' || c == '[':
		if depth+1 > p.maxDepth {
			return fmt.Errorf("JSON nested deeper than %d levels", p.maxDepth)
		}
		return p.container(depth+1, c)
	case c == '"':
		return p.str()
	case c == 't':
		return p.lit("true")
	case c == 'f':
		return p.lit("false")
	case c == 'n':
		return p.lit("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return p.num()
	}
	return p.errf("unexpected %q", p.b[p.i])
}

func (p *jsonScan) container(depth int, open byte) error {
	closeCh := byte('}')
	if open == '[' {
		closeCh = ']'
	}
	p.i++
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == closeCh {
		p.i++
		return nil
	}
	for {
		if open == '{' {
			p.ws()
			if p.i >= len(p.b) || p.b[p.i] != '"' {
				return p.errf("object key must be a string")
			}
			if err := p.str(); err != nil {
				return err
			}
			p.ws()
			if p.i >= len(p.b) || p.b[p.i] != ':' {
				return p.errf("missing ':'")
			}
			p.i++
		}
		if err := p.value(depth); err != nil {
			return err
		}
		p.ws()
		if p.i >= len(p.b) {
			return p.errf("unexpected end")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case closeCh:
			p.i++
			return nil
		default:
			return p.errf("unexpected %q", p.b[p.i])
		}
	}
}

func (p *jsonScan) lit(s string) error {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return p.errf("bad literal")
	}
	p.i += len(s)
	return nil
}

func (p *jsonScan) digits() int {
	n := 0
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}

func (p *jsonScan) num() error {
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

func (p *jsonScan) str() error {
	p.i++ // opening quote
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return nil
		case c == '\\':
			p.i++
			if p.i >= len(p.b) {
				return p.errf("unterminated string")
			}
			switch p.b[p.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i++
			case 'u':
				if len(p.b)-p.i < 5 {
					return p.errf("bad \\u escape")
				}
				for _, h := range p.b[p.i+1 : p.i+5] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return p.errf("bad \\u escape")
					}
				}
				p.i += 5
			default:
				return p.errf("bad escape")
			}
		case c < 0x20:
			return p.errf("control character in string")
		case c < utf8.RuneSelf:
			p.i++
		default:
			r, n := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && n <= 1 {
				return p.errf("invalid UTF-8")
			}
			p.i += n
		}
	}
	return p.errf("unterminated string")
}
