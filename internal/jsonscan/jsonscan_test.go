package jsonscan

import "testing"

func TestTokens(t *testing.T) {
	cases := []struct {
		in      string
		scan    func(*Scanner) error
		ok      bool
		escaped bool
	}{
		{`"abc"`, (*Scanner).Str, true, false},
		{`"a\"b\u00e9\n"`, (*Scanner).Str, true, true},
		{`"ü✓"`, (*Scanner).Str, true, false},
		{"\"\xff\"", (*Scanner).Str, false, false},
		{"\"a\x01\"", (*Scanner).Str, false, false},
		{`"\x"`, (*Scanner).Str, false, false},
		{`"\u12g4"`, (*Scanner).Str, false, false},
		{`"abc`, (*Scanner).Str, false, false},
		{`-0.5e+10`, (*Scanner).Num, true, false},
		{`01`, func(s *Scanner) error {
			if err := s.Num(); err != nil {
				return err
			}
			if s.I != 1 {
				t.Errorf("01: consumed %d bytes, want 1 (the 0)", s.I)
			}
			return nil
		}, true, false},
		{`1.`, (*Scanner).Num, false, false},
		{`1e`, (*Scanner).Num, false, false},
		{`-`, (*Scanner).Num, false, false},
		{`true`, func(s *Scanner) error { return s.Lit("true") }, true, false},
		{`tru`, func(s *Scanner) error { return s.Lit("true") }, false, false},
	}
	for _, c := range cases {
		s := &Scanner{B: []byte(c.in)}
		err := c.scan(s)
		if (err == nil) != c.ok {
			t.Errorf("%q: err = %v, want ok=%v", c.in, err, c.ok)
		}
		if c.ok && c.in[0] == '"' {
			s2 := &Scanner{B: []byte(c.in)}
			esc, _ := s2.StrEsc()
			if esc != c.escaped || s2.I != len(c.in) {
				t.Errorf("%q: escaped=%v at %d, want %v at %d", c.in, esc, s2.I, c.escaped, len(c.in))
			}
		}
	}
	s := &Scanner{B: []byte(" \t\r\n x")}
	s.WS()
	if s.I != 5 {
		t.Fatalf("WS stopped at %d, want 5", s.I)
	}
}
