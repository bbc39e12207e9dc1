package main

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// deviceEnv clears the environment variables the device commands read.
func deviceEnv(t *testing.T) {
	for _, v := range []string{"COAPGW_DATA_DIR", "COAPGW_KEY_FILE", "COAPGW_KEY", "COAPGW_FLEET_KEY_FILE",
		"COAPGW_FLEET_KEY", "COAPGW_FLEET_KEY_SECRET_ARN"} {
		t.Setenv(v, "")
	}
}

func device(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runDevice(t.Context(), args, &out, &errb)
	return code, out.String(), errb.String()
}

var pskLine = regexp.MustCompile(`(?m)^identity (\S+)\npsk +([0-9a-f]+)\n(?:psk-text (\S+)\n)?$`)

// TestDeviceCLI runs add, list, rotate, revoke end to end against a temporary data directory.
func TestDeviceCLI(t *testing.T) {
	deviceEnv(t)
	dir := filepath.Join(t.TempDir(), "data")
	keyFile := filepath.Join(t.TempDir(), "operator.key")
	os.WriteFile(keyFile, []byte(strings.Repeat("ab", 32)+"\n"), 0o600)
	t.Setenv("COAPGW_DATA_DIR", dir)
	t.Setenv("COAPGW_KEY_FILE", keyFile)

	code, out, errs := device(t, "add", "sensor/dev-1")
	m := pskLine.FindStringSubmatch(out)
	if code != 0 || m == nil || m[1] != "sensor/dev-1" || len(m[2]) != 52 || hex.EncodeToString([]byte(m[3])) != m[2] {
		t.Fatalf("add: %d %q %q (want a fresh 26-character text key, as hex and as text)", code, out, errs)
	}
	psk1, _ := hex.DecodeString(m[2])
	fi, err := os.Stat(filepath.Join(dir, "registry.db"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("registry.db: %v %v, want mode 600", fi.Mode(), err)
	}
	db, _ := os.ReadFile(filepath.Join(dir, "registry.db"))
	if bytes.Contains(db, psk1) {
		t.Fatal("registry.db holds the PSK in the clear")
	}

	// Flags after the identity; a given PSK is printed back.
	code, out, errs = device(t, "add", "sensor/dev-2", "--psk", "00112233445566778899aabbccddeeff")
	if code != 0 || !strings.Contains(out, "psk      00112233445566778899aabbccddeeff\n") {
		t.Fatalf("add --psk: %d %q %q", code, out, errs)
	}
	if code, _, errs = device(t, "add", "sensor/dev-1"); code != 1 || !strings.Contains(errs, "credential exists") {
		t.Fatalf("add twice: %d %q", code, errs)
	}

	code, out, errs = device(t, "rotate", "sensor/dev-1")
	m = pskLine.FindStringSubmatch(out)
	if code != 0 || m == nil || m[2] == hex.EncodeToString(psk1) {
		t.Fatalf("rotate: %d %q %q", code, out, errs)
	}
	if code, out, errs = device(t, "revoke", "sensor/dev-2"); code != 0 || out != "revoked sensor/dev-2\n" {
		t.Fatalf("revoke: %d %q %q", code, out, errs)
	}
	if code, _, errs = device(t, "revoke", "sensor/dev-9"); code != 1 || !strings.Contains(errs, "no such credential") {
		t.Fatalf("revoke unknown: %d %q", code, errs)
	}
	code, out, errs = device(t, "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "IDENTITY") ||
		!regexp.MustCompile(`^sensor/dev-1 +valid `).MatchString(lines[1]) ||
		!regexp.MustCompile(`^sensor/dev-2 +revoked \d{4}-`).MatchString(lines[2]) {
		t.Fatalf("list: %d %q %q", code, out, errs)
	}

	// Another operator key: a clear error, nothing changed.
	other := filepath.Join(t.TempDir(), "other.key")
	os.WriteFile(other, []byte(strings.Repeat("cd", 32)), 0o600)
	if code, _, errs = device(t, "add", "sensor/dev-3", "--key-file", other); code != 1 || !strings.Contains(errs, "another operator key") {
		t.Fatalf("add with another operator key: %d %q", code, errs)
	}
	if _, out, _ = device(t, "list"); strings.Contains(out, "dev-3") {
		t.Fatal("a credential was added with the wrong operator key")
	}

	// A text key, as libcoap's -k takes it, is printed back as hex and as text.
	code, out, errs = device(t, "add", "sensor/dev-4", "--psk-text", "my-secret-key-01")
	if code != 0 || out != "identity sensor/dev-4\npsk      "+hex.EncodeToString([]byte("my-secret-key-01"))+"\npsk-text my-secret-key-01\n" {
		t.Fatalf("add --psk-text: %d %q %q", code, out, errs)
	}
	if code, _, errs = device(t, "add", "sensor/dev-5", "--psk-text", "has a space in it!"); code != 2 || !strings.Contains(errs, "printable") {
		t.Fatalf("add --psk-text with a space: %d %q", code, errs)
	}
}

func TestDeviceCLIUsage(t *testing.T) {
	deviceEnv(t)
	dir := t.TempDir()
	t.Setenv("COAPGW_DATA_DIR", dir)
	for _, args := range [][]string{{"-h"}, {"add", "-h"}, {"list", "-h"}, {"rotate", "-h"}, {"revoke", "-h"}, {"key", "-h"}} {
		if code, out, errs := device(t, args...); code != 0 || out+errs == "" {
			t.Errorf("%q: exit %d, output %q", args, code, out+errs)
		}
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "usage: coapgw device"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"add"}, 2, "want one identity"},
		{[]string{"add", "sensor/dev-1", "sensor/dev-2"}, 2, "want one identity"},
		{[]string{"add", "dev-1"}, 2, "want {type}/{thing}"},
		{[]string{"add", "sensor/dev-1"}, 2, "no operator key"},
		{[]string{"add", "sensor/dev-1", "--psk", "00"}, 2, "--psk: want 16 to 64 bytes"},
		{[]string{"add", "--bogus", "sensor/dev-1"}, 2, "flag provided but not defined"},
		{[]string{"list", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"list"}, 1, "no registry in"},
		{[]string{"revoke", "sensor/dev-1"}, 1, "no registry in"},
		{[]string{"key", "sensor/dev-1"}, 2, "no fleet master key"},
	} {
		code, out, errs := device(t, tc.args...)
		if code != tc.code || !strings.Contains(out+errs, tc.want) {
			t.Errorf("%q: exit %d %q, want %d %q", tc.args, code, out+errs, tc.code, tc.want)
		}
	}
	t.Setenv("COAPGW_KEY", "abcd")
	if code, _, errs := device(t, "add", "sensor/dev-1"); code != 2 || !strings.Contains(errs, "2 bytes, want 32") {
		t.Errorf("short operator key: %d %q", code, errs)
	}
}

// TestDeviceKey prints fleet keys: the vector of internal/credential's TestDeriveKeyVector,
// computed independently with Python's hmac.
func TestDeviceKey(t *testing.T) {
	deviceEnv(t)
	t.Setenv("COAPGW_FLEET_KEY", "0123456789abcdef") // key text: hex, so 8 bytes
	if code, _, errs := device(t, "key", "sensor/dev-2"); code != 1 || !strings.Contains(errs, "want at least 16") {
		t.Fatalf("8-byte master key: %d %q", code, errs)
	}
	file := filepath.Join(t.TempDir(), "fleet.key")
	os.WriteFile(file, []byte(hex.EncodeToString([]byte("0123456789abcdef"))+"\n"), 0o600)
	code, out, errs := device(t, "key", "sensor/dev-2", "--fleet-key-file", file)
	if code != 0 || out != "identity sensor/dev-2\npsk      16242e1b26fd85269e3e310750c7df28\n" {
		t.Fatalf("key: %d %q %q", code, out, errs)
	}
	if code, _, errs := device(t, "key", "sensor/dev-2", "--fleet-key-file", file, "--fleet-key-secret-arn", "arn:x"); code != 2 || !strings.Contains(errs, "one way") {
		t.Fatalf("two master key sources: %d %q", code, errs)
	}
}
