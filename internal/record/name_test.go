package record

import (
	"strings"
	"testing"
)

// TestValidName: the AWS IoT name rule ^[a-zA-Z0-9:_-]{1,128}$, the same for strings and bytes,
// checked against every byte value.
func TestValidName(t *testing.T) {
	good := []string{"a", "A-Z_0:9", "sensor", "dev-1", strings.Repeat("x", 128)}
	bad := []string{"", strings.Repeat("x", 129), "a b", "a/b", "é", "a.b", ".", "..", "a\x00", "a\xff", "$aws", "a+", "#"}
	for _, s := range good {
		if !ValidName(s) || !ValidName([]byte(s)) {
			t.Errorf("ValidName(%q) = false", s)
		}
	}
	for _, s := range bad {
		if ValidName(s) || ValidName([]byte(s)) {
			t.Errorf("ValidName(%q) = true", s)
		}
	}
	for c := 0; c < 256; c++ {
		want := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == ':' || c == '_' || c == '-'
		if got := ValidName([]byte{byte(c)}); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", byte(c), got, want)
		}
	}
}
