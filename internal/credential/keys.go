package credential

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// ParseKey decodes a key written as text: hex (an even number of hex digits), else base64
// (standard or URL alphabet, padded or not). Surrounding white space is ignored. Text that is
// both valid hex and valid base64 is hex.
func ParseKey(text string) ([]byte, error) {
	s := strings.TrimSpace(text)
	if s == "" {
		return nil, errors.New("empty key")
	}
	if b, err := hex.DecodeString(s); err == nil {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("key is neither hex nor base64")
}

// LoadKey reads a key from a file (its text, ParseKey) or, if file is "", from text, which the
// caller takes from an environment variable; what names the source (a flag or variable) is in
// the error. It returns nil, nil when neither is set, and checks the key has at least minLen
// bytes (and at most maxLen, if maxLen > 0).
func LoadKey(file, text, textName string, minLen, maxLen int) ([]byte, error) {
	src := textName
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read key: %w", err)
		}
		text, src = string(b), file
	case text == "":
		return nil, nil
	}
	k, err := ParseKey(text)
	if err != nil {
		return nil, fmt.Errorf("key from %s: %w", src, err)
	}
	if len(k) < minLen || maxLen > 0 && len(k) > maxLen {
		if minLen == maxLen {
			return nil, fmt.Errorf("key from %s: %d bytes, want %d", src, len(k), minLen)
		}
		return nil, fmt.Errorf("key from %s: %d bytes, want at least %d", src, len(k), minLen)
	}
	return k, nil
}

// NewKey returns a fresh random device key of KeyLen bytes.
func NewKey() []byte {
	k := make([]byte, KeyLen)
	rand.Read(k) // never returns an error (crypto/rand)
	return k
}
