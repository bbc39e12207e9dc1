package jsonscan

// AppendQuoted appends s as a JSON string, escaping only what RFC 8259 requires: '"', '\\' and
// the control characters below U+0020 (\n, \r and \t by name, the others as \u00XX). Unlike
// encoding/json it leaves <, >, &, U+2028 and U+2029 alone and copies bytes through as they are
// (the callers' strings are valid UTF-8: they come from validated JSON). It does not allocate
// beyond growing b.
func AppendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	b = AppendEscaped(b, s)
	return append(b, '"')
}

// AppendEscaped appends s escaped as AppendQuoted does, without the quotes: for callers that
// escape more (the SQS envelope) and build a string from pieces.
func AppendEscaped(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		}
		start = i + 1
	}
	return append(b, s[start:]...)
}

const hexDigits = "0123456789abcdef"

// QuotedLen is len(AppendQuoted(nil, s)), without building it.
func QuotedLen(s string) int {
	n := 2 + len(s)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
			n++
		case c < 0x20:
			n += 5
		}
	}
	return n
}
