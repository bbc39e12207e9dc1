package main

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// pskInfoPrefix starts the HKDF info of a key derived from the fleet master key.
const pskInfoPrefix = "coapgw psk v1 "

// minMasterLen is the shortest fleet master key the canary accepts, as the gateway does.
const minMasterLen = 16

// devicePSK derives the pre-shared key of identity ({type}/{id}) from the fleet master key:
// HKDF-SHA256(secret = master, salt = nil, info = "coapgw psk v1 " + identity), 16 bytes, the
// key the gateway derives for the same identity from the same master key.
func devicePSK(master []byte, identity string) ([]byte, error) {
	return hkdf.Key(sha256.New, master, nil, pskInfoPrefix+identity, 16)
}

// secretsAPI is the one Secrets Manager call the canary makes.
type secretsAPI interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

var _ secretsAPI = (*secretsmanager.Client)(nil)

// fleetKey is where the fleet master key comes from: fixed (COAPGW_FLEET_KEY), or the secret
// arn, read on first use and kept for the life of the Lambda environment until forget.
type fleetKey struct {
	arn     string
	secrets secretsAPI

	mu     sync.Mutex
	master []byte
}

// get returns the master key, reading the secret if it has not been read (or was forgotten).
func (k *fleetKey) get(ctx context.Context) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.master != nil {
		return k.master, nil
	}
	out, err := k.secrets.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(k.arn)})
	if err != nil {
		return nil, fmt.Errorf("fleet key from secret %s: %w", k.arn, err)
	}
	m, err := masterFromSecret(out)
	if err != nil {
		return nil, fmt.Errorf("fleet key from secret %s: %w", k.arn, err)
	}
	k.master = m
	return m, nil
}

// forget drops a key read from the secret, so the next get reads it again: after a failed
// handshake, in case the key was rotated. A fixed key stays.
func (k *fleetKey) forget() {
	if k.arn == "" {
		return
	}
	k.mu.Lock()
	k.master = nil
	k.mu.Unlock()
}

// masterFromSecret returns the master key a secret holds: its binary value as it is, or its
// string value as hex, else base64 (standard or URL alphabet, padded or not), else the string's
// own bytes. Hex and base64 are tried in the order the gateway tries them, so both read the same
// key from the same secret.
func masterFromSecret(out *secretsmanager.GetSecretValueOutput) ([]byte, error) {
	var key []byte
	switch {
	case len(out.SecretBinary) > 0:
		key = out.SecretBinary
	case out.SecretString != nil && *out.SecretString != "":
		key = keyFromText(*out.SecretString)
	default:
		return nil, errors.New("secret has no value")
	}
	if len(key) < minMasterLen {
		return nil, fmt.Errorf("key has %d bytes, want at least %d", len(key), minMasterLen)
	}
	return key, nil
}

func keyFromText(text string) []byte {
	s := strings.TrimSpace(text)
	if b, err := hex.DecodeString(s); err == nil && s != "" {
		return b
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && s != "" {
			return b
		}
	}
	return []byte(text)
}

// fixedMaster decodes COAPGW_FLEET_KEY (hex).
func fixedMaster(text string) ([]byte, error) {
	m, err := hex.DecodeString(strings.TrimSpace(text))
	if err != nil {
		return nil, fmt.Errorf("COAPGW_FLEET_KEY must be hex: %w", err)
	}
	if len(m) < minMasterLen {
		return nil, fmt.Errorf("COAPGW_FLEET_KEY has %d bytes, want at least %d", len(m), minMasterLen)
	}
	return m, nil
}
