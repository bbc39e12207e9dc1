package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/coapgw/coapgw/internal/awstest"
)

const testARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:coapgw/fleet-AbCdEf"

// fakeSecrets serves one secret value, or an error, and counts the reads.
type fakeSecrets struct {
	mu    sync.Mutex
	out   secretsmanager.GetSecretValueOutput
	err   error
	reads int
}

func (f *fakeSecrets) GetSecretValue(_ context.Context, in *secretsmanager.GetSecretValueInput, _ ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if aws.ToString(in.SecretId) != testARN {
		return nil, errors.New("ResourceNotFoundException")
	}
	if f.err != nil {
		return nil, f.err
	}
	out := f.out
	return &out, nil
}

func (f *fakeSecrets) set(master []byte, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.out, f.err = secretsmanager.GetSecretValueOutput{SecretBinary: master}, err
}

func (f *fakeSecrets) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

func TestMasterFromSecret(t *testing.T) {
	raw := "a raw key of thirty-two bytes!!!" // neither hex nor base64
	for _, tc := range []struct {
		name    string
		out     secretsmanager.GetSecretValueOutput
		want    []byte
		wantErr string
	}{
		{"binary", secretsmanager.GetSecretValueOutput{SecretBinary: testMaster}, testMaster, ""},
		{"hex string", secretsmanager.GetSecretValueOutput{SecretString: aws.String(hex.EncodeToString(testMaster) + "\n")}, testMaster, ""},
		{"base64 string", secretsmanager.GetSecretValueOutput{SecretString: aws.String(base64.StdEncoding.EncodeToString(testMaster))}, testMaster, ""},
		{"base64url string", secretsmanager.GetSecretValueOutput{SecretString: aws.String(base64.RawURLEncoding.EncodeToString(seq(32)))}, seq(32), ""},
		{"raw string", secretsmanager.GetSecretValueOutput{SecretString: aws.String(raw)}, []byte(raw), ""},
		{"short", secretsmanager.GetSecretValueOutput{SecretBinary: testMaster[:15]}, nil, "15 bytes, want at least 16"},
		{"short hex", secretsmanager.GetSecretValueOutput{SecretString: aws.String("00112233")}, nil, "4 bytes"},
		{"blank", secretsmanager.GetSecretValueOutput{SecretString: aws.String(" \n")}, nil, "want at least 16"},
		{"empty", secretsmanager.GetSecretValueOutput{SecretString: aws.String("")}, nil, "no value"},
		{"none", secretsmanager.GetSecretValueOutput{}, nil, "no value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := masterFromSecret(&tc.out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("masterFromSecret = %x, %v; want error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("masterFromSecret = %x, %v; want %x", got, err, tc.want)
			}
		})
	}
}

// seq is the bytes 0, 1, ..., n-1.
func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func TestFromEnvDTLS(t *testing.T) {
	key := hex.EncodeToString(testMaster)
	for _, tc := range []struct {
		env  map[string]string
		want []string // targets; nil: rejected
	}{
		{map[string]string{"COAPGW_CANARY_TARGETS": "gw1.example, 10.0.0.1:6000, ::1", "COAPGW_CANARY_IDENTITY": testIdentity, "COAPGW_FLEET_KEY": key},
			[]string{"gw1.example:5684", "10.0.0.1:6000", "[::1]:5684"}},
		{map[string]string{"COAPGW_CANARY_TARGETS": "gw1.example", "COAPGW_CANARY_IDENTITY": testIdentity, "COAPGW_FLEET_KEY_SECRET_ARN": testARN, "COAPGW_COAPS_PORT": "15684"},
			[]string{"gw1.example:15684"}},
		// Plain CoAP: a target needs its port, as before; the CoAPS port does not apply.
		{map[string]string{"COAPGW_CANARY_TARGETS": "gw1.example", "COAPGW_COAPS_PORT": "5684"}, nil},
		{map[string]string{"COAPGW_CANARY_TARGETS": "a:1", "COAPGW_CANARY_IDENTITY": testIdentity}, nil},
		{map[string]string{"COAPGW_CANARY_TARGETS": "a:1", "COAPGW_FLEET_KEY": key}, nil},
		{map[string]string{"COAPGW_CANARY_TARGETS": "a:1", "COAPGW_FLEET_KEY_SECRET_ARN": testARN}, nil},
		{map[string]string{"COAPGW_CANARY_TARGETS": "a:1", "COAPGW_CANARY_IDENTITY": testIdentity, "COAPGW_FLEET_KEY": key, "COAPGW_FLEET_KEY_SECRET_ARN": testARN}, nil},
		{map[string]string{"COAPGW_CANARY_TARGETS": "a:1", "COAPGW_CANARY_IDENTITY": "canary", "COAPGW_FLEET_KEY": key}, nil},
		{map[string]string{"COAPGW_CANARY_TARGETS": "a:1", "COAPGW_CANARY_IDENTITY": "canary/a/b", "COAPGW_FLEET_KEY": key}, nil},
		{map[string]string{"COAPGW_CANARY_TARGETS": "a:1", "COAPGW_CANARY_IDENTITY": "/a", "COAPGW_FLEET_KEY": key}, nil},
		{map[string]string{"COAPGW_CANARY_TARGETS": "a:1", "COAPGW_CANARY_IDENTITY": testIdentity, "COAPGW_FLEET_KEY": "not hex"}, nil},
		{map[string]string{"COAPGW_CANARY_TARGETS": "a:1", "COAPGW_CANARY_IDENTITY": testIdentity, "COAPGW_FLEET_KEY": "00112233"}, nil},
		{map[string]string{"COAPGW_CANARY_TARGETS": "a:1", "COAPGW_CANARY_IDENTITY": testIdentity, "COAPGW_FLEET_KEY": key, "COAPGW_COAPS_PORT": "0"}, nil},
		{map[string]string{"COAPGW_CANARY_TARGETS": "a:1", "COAPGW_CANARY_IDENTITY": testIdentity, "COAPGW_FLEET_KEY": key, "COAPGW_COAPS_PORT": "coaps"}, nil},
		{map[string]string{"COAPGW_CANARY_TARGETS": "[::1]", "COAPGW_CANARY_IDENTITY": testIdentity, "COAPGW_FLEET_KEY": key}, nil},
	} {
		c, err := fromEnv(func(k string) string { return tc.env[k] }, slog.New(slog.DiscardHandler))
		switch {
		case tc.want == nil && err == nil:
			t.Errorf("fromEnv(%v) accepted: targets %q", tc.env, c.targets)
		case tc.want != nil && err != nil:
			t.Errorf("fromEnv(%v): %v", tc.env, err)
		case tc.want != nil && (!slices.Equal(c.targets, tc.want) || c.identity != testIdentity):
			t.Errorf("fromEnv(%v): targets %q, identity %q; want %q, %q", tc.env, c.targets, c.identity, tc.want, testIdentity)
		}
	}
}

// aggregate is the last run's metrics without dimensions: HealthCheckOK and HealthCheckFailed.
func aggregate(cw *fakeCW) map[string]float64 {
	got := map[string]float64{}
	for _, in := range cw.in {
		for _, d := range in.MetricData {
			if len(d.Dimensions) == 0 {
				got[*d.MetricName] = *d.Value
			}
		}
	}
	cw.in = nil
	return got
}

// TestRunDTLS runs the canary in DTLS mode with its key in a (fake) secret: the secret is read
// once for many runs; after the key is rotated the stale key fails the probe, with the reason in
// the log, and the next run reads the secret again and succeeds; an unreadable secret fails every
// probe without failing the run.
func TestRunDTLS(t *testing.T) {
	rotated := bytes.Repeat([]byte{0x17}, 32)
	gw := newDTLSGateway(t, testMaster, testIdentity, piggybacked(t))
	gwRotated := newDTLSGateway(t, rotated, testIdentity, piggybacked(t))
	var logs bytes.Buffer
	c, err := fromEnv(func(k string) string {
		return map[string]string{"COAPGW_CANARY_TARGETS": gw.addr, "COAPGW_CANARY_IDENTITY": testIdentity,
			"COAPGW_FLEET_KEY_SECRET_ARN": testARN, "COAPGW_CANARY_TIMEOUT": "1500ms"}[k]
	}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	sm := &fakeSecrets{}
	sm.set(testMaster, nil)
	c.key.secrets = sm
	cw := &fakeCW{}
	c.cw = cw
	step := func(name string, wantOK, wantFailed float64, wantReads int) {
		t.Helper()
		logs.Reset()
		if err := c.run(t.Context()); err != nil {
			t.Fatalf("%s: run: %v", name, err)
		}
		if got := aggregate(cw); got["HealthCheckOK"] != wantOK || got["HealthCheckFailed"] != wantFailed {
			t.Errorf("%s: metrics %v, want %v OK and %v failed\n%s", name, got, wantOK, wantFailed, logs.String())
		}
		if n := sm.count(); n != wantReads {
			t.Errorf("%s: %d secret reads, want %d", name, n, wantReads)
		}
	}
	step("first run", 1, 0, 1)
	step("second run", 1, 0, 1)
	if !strings.Contains(logs.String(), "identity="+testIdentity) || !strings.Contains(logs.String(), "handshake_ms=") {
		t.Errorf("probe ok log without identity and handshake time:\n%s", logs.String())
	}

	// The fleet key is rotated: the gateways have the new one, the canary still the old one.
	sm.set(rotated, nil)
	c.targets = []string{gwRotated.addr}
	step("stale key", 0, 1, 1)
	if !strings.Contains(logs.String(), "probe failed") || !strings.Contains(logs.String(), "wrong key") {
		t.Errorf("a failed handshake is not logged with its reason:\n%s", logs.String())
	}
	step("rotated key", 1, 0, 2)

	sm.set(nil, errors.New("AccessDeniedException: not authorized"))
	c.key.forget()
	c.targets = []string{gw.addr, gwRotated.addr}
	step("secret unreadable", 0, 2, 3)
	if !strings.Contains(logs.String(), "AccessDeniedException") {
		t.Errorf("the secret's error is not in the log:\n%s", logs.String())
	}
	step("secret still unreadable", 0, 2, 4) // nothing was kept: it is read again
}

// TestRunDTLSFixedKey uses COAPGW_FLEET_KEY: the right key passes, another key fails.
func TestRunDTLSFixedKey(t *testing.T) {
	gw := newDTLSGateway(t, testMaster, testIdentity, piggybacked(t))
	for _, tc := range []struct {
		key          []byte
		ok, failed   float64
		wantInTheLog string
	}{
		{testMaster, 1, 0, "probe ok"},
		{bytes.Repeat([]byte{0x43}, 32), 0, 1, "wrong key"},
	} {
		var logs bytes.Buffer
		c, err := fromEnv(func(k string) string {
			return map[string]string{"COAPGW_CANARY_TARGETS": gw.addr, "COAPGW_CANARY_IDENTITY": testIdentity,
				"COAPGW_FLEET_KEY": hex.EncodeToString(tc.key), "COAPGW_CANARY_TIMEOUT": "1500ms"}[k]
		}, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		cw := &fakeCW{}
		c.cw = cw
		if err := c.run(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := aggregate(cw); got["HealthCheckOK"] != tc.ok || got["HealthCheckFailed"] != tc.failed || !strings.Contains(logs.String(), tc.wantInTheLog) {
			t.Errorf("key %x: metrics %v, want %v OK and %v failed, %q in the log:\n%s", tc.key[:4], got, tc.ok, tc.failed, tc.wantInTheLog, logs.String())
		}
	}
}

// TestFleetKeyFromMoto reads the master key from Secrets Manager as moto serves it, binary and
// as a hex string, and probes a gateway with the key read.
func TestFleetKeyFromMoto(t *testing.T) {
	m := awstest.Start(t)
	ctx := t.Context()
	sm := secretsmanager.NewFromConfig(m.AWSConfig(ctx))
	bin, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("coapgw/fleet"), SecretBinary: testMaster})
	if err != nil {
		t.Fatal(err)
	}
	str, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("coapgw/fleet-hex"), SecretString: aws.String(hex.EncodeToString(testMaster))})
	if err != nil {
		t.Fatal(err)
	}
	for _, arn := range []string{aws.ToString(bin.ARN), aws.ToString(str.ARN)} {
		k := &fleetKey{arn: arn, secrets: sm}
		if got, err := k.get(ctx); err != nil || !bytes.Equal(got, testMaster) {
			t.Errorf("key from %s: %x, %v; want %x", arn, got, err, testMaster)
		}
	}
	missing := aws.ToString(bin.ARN) + "-gone"
	if _, err := (&fleetKey{arn: missing, secrets: sm}).get(ctx); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("key from a missing secret: %v, want an error naming it", err)
	}

	gw := newDTLSGateway(t, testMaster, testIdentity, piggybacked(t))
	c, err := fromEnv(func(k string) string {
		return map[string]string{"COAPGW_CANARY_TARGETS": gw.addr, "COAPGW_CANARY_IDENTITY": testIdentity,
			"COAPGW_FLEET_KEY_SECRET_ARN": aws.ToString(bin.ARN)}[k]
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c.key.secrets = sm
	cw := &fakeCW{}
	c.cw = cw
	if err := c.run(ctx); err != nil {
		t.Fatal(err)
	}
	if got := aggregate(cw); got["HealthCheckOK"] != 1 || got["HealthCheckFailed"] != 0 {
		t.Errorf("metrics %v, want 1 OK", got)
	}
}
