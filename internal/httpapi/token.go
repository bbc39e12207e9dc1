package httpapi

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// minTokenLen is the shortest token LoadOrCreateToken accepts from a file.
const minTokenLen = 16

// LoadOrCreateToken returns the API token kept in the file at path: its content without
// surrounding white space. When the file does not exist it writes a new token there (32 random
// bytes, base64url, mode 0600, creating the directory 0700 if needed) and returns it with
// created true; the next start reads the same token. The file appears whole or not at all, and
// of two processes creating it at once both return the token that won.
func LoadOrCreateToken(path string) (token string, created bool, err error) {
	token, err = readToken(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return token, false, err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false, fmt.Errorf("generate token: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(b[:])
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, fmt.Errorf("create token file %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, ".token-*") // mode 0600
	if err != nil {
		return "", false, fmt.Errorf("create token file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(token + "\n")
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", false, fmt.Errorf("write token file %s: %w", path, err)
	}
	// Link, unlike rename, never replaces a file another process created meanwhile.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			token, err = readToken(path)
			return token, false, err
		}
		return "", false, fmt.Errorf("create token file %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return token, true, nil
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		return "", fmt.Errorf("read token file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	switch {
	case len(token) < minTokenLen:
		return "", fmt.Errorf("token file %s: the token is shorter than %d characters", path, minTokenLen)
	case strings.ContainsFunc(token, func(r rune) bool { return r <= ' ' || r > '~' }):
		return "", fmt.Errorf("token file %s: the token must be one line of printable ASCII without spaces", path)
	}
	return token, nil
}
