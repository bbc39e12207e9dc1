package credential

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/registry"
)

func operatorKey(b byte) []byte { return bytes.Repeat([]byte{b}, OperatorKeyLen) }

func openRegistry(t *testing.T, path string) *registry.Registry {
	t.Helper()
	reg, err := registry.Open(path, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	return reg
}

func newLocal(t *testing.T, reg *registry.Registry, key []byte, opts LocalOptions) *Local {
	t.Helper()
	s, err := NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLocal(t.Context(), reg, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestSealer(t *testing.T) {
	s, _ := NewSealer(operatorKey(1))
	key := []byte("0123456789abcdef")
	sealed := s.Seal("sensor/dev-1", key)
	if bytes.Contains(sealed, key) {
		t.Fatal("the sealed key contains the key")
	}
	if got, err := s.Open("sensor/dev-1", sealed); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("Open = %x, %v", got, err)
	}
	if _, err := s.Open("sensor/dev-2", sealed); err == nil || !strings.Contains(err.Error(), "not sealed for this identity") {
		t.Fatalf("Open for another identity: %v", err)
	}
	other, _ := NewSealer(operatorKey(2))
	if _, err := other.Open("sensor/dev-1", sealed); !errors.Is(err, ErrWrongOperatorKey) {
		t.Fatalf("Open with another operator key: %v", err)
	}
	// A new operator key that holds the old one opens what the old one sealed, and seals anew.
	rotated, _ := NewSealer(operatorKey(2), operatorKey(1))
	if got, err := rotated.Open("sensor/dev-1", sealed); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("Open with the old key held: %x, %v", got, err)
	}
	if _, err := s.Open("sensor/dev-1", rotated.Seal("sensor/dev-1", key)); !errors.Is(err, ErrWrongOperatorKey) {
		t.Fatalf("a key sealed with the new operator key opened with the old: %v", err)
	}
	if _, err := NewSealer(operatorKey(1)[:16]); err == nil {
		t.Fatal("NewSealer accepted a 16-byte operator key")
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	k := operatorKey(7)
	hexFile := filepath.Join(dir, "hex")
	os.WriteFile(hexFile, []byte(hex.EncodeToString(k)+"\n"), 0o600)
	b64File := filepath.Join(dir, "b64")
	os.WriteFile(b64File, []byte(base64.StdEncoding.EncodeToString(k)), 0o600)
	for _, tc := range []struct{ file, text string }{
		{hexFile, ""}, {b64File, "ignored"}, {"", hex.EncodeToString(k)},
		{"", base64.RawURLEncoding.EncodeToString(k)},
	} {
		got, err := LoadKey(tc.file, tc.text, "COAPGW_KEY", 32, 32)
		if err != nil || !bytes.Equal(got, k) {
			t.Errorf("LoadKey(%q, %q) = %x, %v", tc.file, tc.text, got, err)
		}
	}
	if got, err := LoadKey("", "", "COAPGW_KEY", 32, 32); got != nil || err != nil {
		t.Errorf("LoadKey of nothing = %x, %v", got, err)
	}
	for _, tc := range []struct{ file, text, want string }{
		{"", hex.EncodeToString(k[:16]), "COAPGW_KEY: 16 bytes, want 32"},
		{"", "not a key!", "neither hex nor base64"},
		{filepath.Join(dir, "missing"), "", "no such file"},
	} {
		if _, err := LoadKey(tc.file, tc.text, "COAPGW_KEY", 32, 32); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadKey(%q, %q) = %v, want %q", tc.file, tc.text, err, tc.want)
		}
	}
}

// TestLocal: add, lookup, rotate, revoke; the key is never in the database file in the clear;
// another operator key fails at load; a change made by another process is seen after Refresh.
func TestLocal(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "registry.db")
	reg := openRegistry(t, path)
	now := time.Unix(1_700_000_000, 0)
	l := newLocal(t, reg, operatorKey(1), LocalOptions{Refresh: time.Second, Now: func() time.Time { return now }})

	key := []byte("an unmistakable!")
	c, err := l.Add(ctx, "sensor/dev-1", key)
	if err != nil {
		t.Fatal(err)
	}
	if c.Identity != "sensor/dev-1" || c.Type != "sensor" || c.Thing != "dev-1" {
		t.Fatalf("Add = %+v", c)
	}
	if _, err := l.Add(ctx, "sensor/dev-1", nil); !errors.Is(err, registry.ErrCredentialExists) {
		t.Fatalf("second Add: %v", err)
	}
	if _, err := l.Add(ctx, "other/dev-1", nil); err == nil || !strings.Contains(err.Error(), "exists with type sensor") {
		t.Fatalf("Add under another type: %v", err)
	}
	if _, err := l.Add(ctx, "sensor/dev-2", []byte("short")); err == nil {
		t.Fatal("Add accepted a 5-byte key")
	}
	got, err := l.Lookup(ctx, "sensor/dev-1")
	if err != nil || !bytes.Equal(got.Key, key) || got.Thing != "dev-1" {
		t.Fatalf("Lookup = %+v, %v", got, err)
	}
	if _, err := l.Lookup(ctx, "sensor/dev-2"); !errors.Is(err, ErrUnknown) {
		t.Fatalf("Lookup of an unknown identity: %v", err)
	}
	for thing, want := range map[string]bool{"dev-1": true, "dev-2": false} {
		if b, _ := l.Bound(ctx, "sensor", thing); b != want {
			t.Errorf("Bound(%s) = %v", thing, b)
		}
	}
	th, err := reg.Thing(ctx, "dev-1")
	if err != nil || th.Type != "sensor" {
		t.Fatalf("the thing Add created: %+v, %v", th, err)
	}

	// Encryption at rest: the key bytes are nowhere in the database files.
	reg.Close()
	for _, p := range []string{path, path + "-wal"} {
		data, err := os.ReadFile(p)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if bytes.Contains(data, key) {
			t.Fatalf("%s holds the key in the clear", p)
		}
	}
	reg = openRegistry(t, path)
	s2, _ := NewSealer(operatorKey(2))
	if _, err := NewLocal(ctx, reg, s2, LocalOptions{}); !errors.Is(err, ErrWrongOperatorKey) {
		t.Fatalf("NewLocal with another operator key: %v", err)
	}
	l = newLocal(t, reg, operatorKey(1), LocalOptions{Refresh: time.Second, Now: func() time.Time { return now }})
	if got, err := l.Lookup(ctx, "sensor/dev-1"); err != nil || !bytes.Equal(got.Key, key) {
		t.Fatalf("Lookup after reopening = %+v, %v", got, err)
	}

	// Another process (here: another Local on its own registry handle) revokes; this one sees
	// it once Refresh has passed.
	other := newLocal(t, openRegistry(t, path), operatorKey(1), LocalOptions{})
	if err := other.Revoke(ctx, "sensor/dev-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Lookup(ctx, "sensor/dev-1"); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Lookup in the revoking process: %v", err)
	}
	if _, err := l.Lookup(ctx, "sensor/dev-1"); err != nil {
		t.Fatalf("Lookup within Refresh: %v, want the loaded credential", err)
	}
	gen := l.Generation()
	now = now.Add(time.Second)
	if _, err := l.Lookup(ctx, "sensor/dev-1"); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Lookup after Refresh: %v, want ErrRevoked", err)
	}
	if l.Generation() == gen {
		t.Error("generation unchanged by a revocation")
	}
	if b, _ := l.Bound(ctx, "sensor", "dev-1"); !b {
		t.Error("a revoked credential no longer binds its thing")
	}
	if err := l.Revoke(ctx, "sensor/dev-9"); !errors.Is(err, registry.ErrNoCredential) {
		t.Fatalf("Revoke of an unknown identity: %v", err)
	}

	// Rotate: a new key, valid again.
	c, err = l.Rotate(ctx, "sensor/dev-1", nil)
	if err != nil || len(c.Key) != KeyLen || bytes.Equal(c.Key, key) {
		t.Fatalf("Rotate = %x, %v", c.Key, err)
	}
	if got, err := l.Lookup(ctx, "sensor/dev-1"); err != nil || !bytes.Equal(got.Key, c.Key) {
		t.Fatalf("Lookup after Rotate = %x, %v", got.Key, err)
	}
	list, err := l.List(ctx)
	if err != nil || len(list) != 1 || list[0].Identity != "sensor/dev-1" || !list[0].Revoked.IsZero() ||
		!list[0].Rotated.After(list[0].Created) && !list[0].Rotated.Equal(list[0].Created) {
		t.Fatalf("List = %+v, %v", list, err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{}, ""},
		{Config{KeyFile: "k"}, ""},
		{Config{FleetKey: "k", RevocationFile: "r"}, ""},
		{Config{Key: "k", FleetKeyFile: "f"}, "choose one source"},
		{Config{FleetKey: "k", FleetKeySecretARN: "arn"}, "one way"},
		{Config{KeyFile: "k", RevocationFile: "r"}, "revocation_file is for fleet keys"},
	} {
		err := tc.c.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: Validate() = %v, want %q", tc.c, err, tc.want)
		}
	}
	st, err := Open(t.Context(), Config{}, Deps{})
	if st != nil || err != nil {
		t.Fatalf("Open(no source) = %v, %v; want nil, nil", st, err)
	}
}

// TestLocalConcurrent: lookups and bound checks run while credentials change and reload (run
// with -race).
func TestLocalConcurrent(t *testing.T) {
	ctx := t.Context()
	reg := openRegistry(t, filepath.Join(t.TempDir(), "registry.db"))
	l := newLocal(t, reg, operatorKey(1), LocalOptions{Refresh: time.Nanosecond})
	if _, err := l.Add(ctx, "sensor/dev-0", nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := l.Lookup(ctx, "sensor/dev-0"); err != nil {
				errc <- err
				return
			}
			l.Bound(ctx, "sensor", "dev-1")
			l.BoundBytes([]byte("sensor"), []byte("dev-2"))
		}
	}()
	for i := 1; i < 20; i++ {
		if _, err := l.Add(ctx, "sensor/dev-"+string(rune('a'+i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if list, _ := l.List(ctx); len(list) != 20 {
		t.Fatalf("%d credentials, want 20", len(list))
	}
}
