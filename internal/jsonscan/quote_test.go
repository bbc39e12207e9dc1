package jsonscan

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestAppendQuoted(t *testing.T) {
	var ctl strings.Builder
	for c := range 0x20 {
		ctl.WriteByte(byte(c))
	}
	for _, s := range []string{"", "plain", `quote " and \ backslash`, ctl.String(), "tab\tnl\ncr\r", "ünïcode ☃", "a<b>&c", "\u2028\u2029"} {
		got := AppendQuoted([]byte("x"), s)
		if got[0] != 'x' {
			t.Fatalf("%q: prefix lost", s)
		}
		got = got[1:]
		var back string
		if err := json.Unmarshal(got, &back); err != nil || back != s {
			t.Errorf("%q → %s: does not decode back (%q, %v)", s, got, back, err)
		}
		if n := QuotedLen(s); n != len(got) {
			t.Errorf("%q: QuotedLen %d, AppendQuoted wrote %d", s, n, len(got))
		}
	}
	// What it writes, where encoding/json differs: no HTML or line-separator escaping, \u0008
	// and \u000c instead of \b and \f.
	for s, want := range map[string]string{
		"a<b>&c":       `"a<b>&c"`,
		"\u2028":       "\"\u2028\"",
		"\b\f\x00\x1f": `"\u0008\u000c\u0000\u001f"`,
		"\"\\\n\r\t":   `"\"\\\n\r\t"`,
	} {
		if got := string(AppendQuoted(nil, s)); got != want {
			t.Errorf("%q → %s, want %s", s, got, want)
		}
	}
}
