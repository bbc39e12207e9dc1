package credential

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/coapgw/coapgw/internal/awstest"
)

// TestDeriveKeyVector pins the fleet derivation to vectors computed independently of Go, with
// Python (hmac, hashlib; a hand-run of RFC 5869 that reproduces the RFC's test case 3, and
// cryptography's HKDF agreeing):
//
//	def hkdf(ikm, info, L):
//	    prk = hmac.new(b"\0"*32, ikm, sha256).digest()
//	    t, okm, i = b"", b"", 1
//	    while len(okm) < L:
//	        t = hmac.new(prk, t + info + bytes([i]), sha256).digest(); okm += t; i += 1
//	    return okm[:L]
//	hkdf(bytes(range(32)), b"coapgw psk v1 sensor/dev-1", 16)  # 8202651b31e2d484afd41da80719ef13
//	hkdf(b"0123456789abcdef", b"coapgw psk v1 sensor/dev-2", 16) # 16242e1b26fd85269e3e310750c7df28
func TestDeriveKeyVector(t *testing.T) {
	master := make([]byte, 32)
	for i := range master {
		master[i] = byte(i)
	}
	for _, tc := range []struct {
		master   []byte
		identity string
		want     string
	}{
		{master, "sensor/dev-1", "8202651b31e2d484afd41da80719ef13"},
		{[]byte("0123456789abcdef"), "sensor/dev-2", "16242e1b26fd85269e3e310750c7df28"},
	} {
		k, err := DeriveKey(tc.master, tc.identity)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(k); got != tc.want {
			t.Errorf("DeriveKey(%x, %q) = %s, want %s", tc.master, tc.identity, got, tc.want)
		}
	}
	if _, err := DeriveKey(make([]byte, 15), "a/b"); err == nil {
		t.Error("DeriveKey accepted a 15-byte master key")
	}
}

func TestFleetLookup(t *testing.T) {
	ctx := t.Context()
	master := []byte("0123456789abcdef")
	if _, err := NewFleet(master[:15], nil); err == nil {
		t.Fatal("NewFleet accepted a 15-byte master key")
	}
	f, err := NewFleet(master, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.Lookup(ctx, "sensor/dev-2")
	if err != nil {
		t.Fatal(err)
	}
	if c.Type != "sensor" || c.Thing != "dev-2" || hex.EncodeToString(c.Key) != "16242e1b26fd85269e3e310750c7df28" {
		t.Fatalf("Lookup = %+v %x", c, c.Key)
	}
	for _, id := range []string{"", "dev-2", "sensor/", "/dev-2", "sensor/dev/2", "sensor/dev 2"} {
		if _, err := f.Lookup(ctx, id); !errors.Is(err, ErrUnknown) {
			t.Errorf("Lookup(%q) = %v, want ErrUnknown", id, err)
		}
	}
	if b, _ := f.Bound(ctx, "any", "thing"); !b {
		t.Error("a fleet thing is not bound")
	}
}

// TestRevocationFile: a revoked identity fails Lookup; the file is reloaded once it changed and
// the check interval passed, and a file gone missing keeps the last list in force.
func TestRevocationFile(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "revoked")
	write := func(s string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Unix(1_700_000_000, 0)
	write("# revoked devices\nsensor/dev-1\n\n  sensor/dev-3  \n", t0)
	now := t0
	rf, err := OpenRevocationFile(path, time.Second, func() time.Time { return now }, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := NewFleet([]byte("0123456789abcdef"), rf)
	check := func(id string, revoked bool) {
		t.Helper()
		_, err := f.Lookup(ctx, id)
		if revoked && !errors.Is(err, ErrRevoked) || !revoked && err != nil {
			t.Fatalf("Lookup(%s) = %v, want revoked %v", id, err, revoked)
		}
	}
	check("sensor/dev-1", true)
	check("sensor/dev-3", true)
	check("sensor/dev-2", false)
	gen := f.Generation()

	write("sensor/dev-2\n", t0.Add(time.Minute))
	check("sensor/dev-2", false) // within the check interval: not looked at yet
	now = now.Add(time.Second)
	check("sensor/dev-2", true)
	check("sensor/dev-1", false)
	if f.Generation() == gen {
		t.Error("generation did not change with the list")
	}

	os.Remove(path)
	now = now.Add(time.Second)
	check("sensor/dev-2", true) // the last list stays in force
	if _, err := OpenRevocationFile(path, 0, nil, nil); err == nil {
		t.Error("OpenRevocationFile of a missing file did not fail")
	}
}

// fakeSecrets is Secrets Manager with one secret.
type fakeSecrets struct {
	arn string
	out secretsmanager.GetSecretValueOutput
}

func (f *fakeSecrets) GetSecretValue(_ context.Context, in *secretsmanager.GetSecretValueInput, _ ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	if aws.ToString(in.SecretId) != f.arn {
		return nil, errors.New("ResourceNotFoundException")
	}
	return &f.out, nil
}

func TestMasterFromSecret(t *testing.T) {
	ctx := t.Context()
	const arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:fleet-AbCdEf"
	want := []byte("0123456789abcdef0123")
	for _, tc := range []struct {
		name string
		out  secretsmanager.GetSecretValueOutput
		err  string
	}{
		{"binary", secretsmanager.GetSecretValueOutput{SecretBinary: want}, ""},
		{"hex string", secretsmanager.GetSecretValueOutput{SecretString: aws.String(hex.EncodeToString(want) + "\n")}, ""},
		{"short", secretsmanager.GetSecretValueOutput{SecretBinary: want[:15]}, "want at least 16"},
		{"empty", secretsmanager.GetSecretValueOutput{}, "no value"},
		{"not a key", secretsmanager.GetSecretValueOutput{SecretString: aws.String("hunter2!")}, "neither hex nor base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := masterFromSecret(ctx, &fakeSecrets{arn: arn, out: tc.out}, arn)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("= %x, %v; want %x", got, err, want)
			}
		})
	}
	if _, err := masterFromSecret(ctx, &fakeSecrets{arn: arn}, arn+"x"); err == nil || !strings.Contains(err.Error(), arn+"x") {
		t.Fatalf("missing secret: %v", err)
	}
}

// TestMasterFromSecretMoto reads the master key from moto's Secrets Manager through the SDK and
// derives the same keys as from the key itself.
func TestMasterFromSecretMoto(t *testing.T) {
	ctx := t.Context()
	m := awstest.Start(t)
	cfg := m.AWSConfig(ctx)
	master := []byte("fleet master key for moto test")
	out, err := secretsmanager.NewFromConfig(cfg).CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name: aws.String("coapgw/fleet"), SecretBinary: master})
	if err != nil {
		t.Fatal(err)
	}
	c := Config{FleetKeySecretARN: aws.ToString(out.ARN)}
	st, err := Open(ctx, c, Deps{AWS: func(context.Context) (aws.Config, error) { return cfg, nil }})
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.Lookup(ctx, "sensor/dev-1")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := DeriveKey(master, "sensor/dev-1")
	if !bytes.Equal(got.Key, want) {
		t.Fatalf("key via Secrets Manager %x, want %x", got.Key, want)
	}
}

// TestPSKFunc: the DTLS hook answers the identity's key, and fails for a revoked identity.
func TestPSKFunc(t *testing.T) {
	path := filepath.Join(t.TempDir(), "revoked")
	os.WriteFile(path, []byte("sensor/dev-1\n"), 0o600)
	rf, err := OpenRevocationFile(path, 0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := NewFleet([]byte("0123456789abcdef"), rf)
	psk := PSKFunc(f)
	if k, err := psk([]byte("sensor/dev-2")); err != nil || hex.EncodeToString(k) != "16242e1b26fd85269e3e310750c7df28" {
		t.Fatalf("psk(sensor/dev-2) = %x, %v", k, err)
	}
	if k, err := psk([]byte("sensor/dev-1")); !errors.Is(err, ErrRevoked) || k != nil {
		t.Fatalf("psk(revoked) = %x, %v", k, err)
	}
}
