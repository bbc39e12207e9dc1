package credential

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// MinMasterLen is the shortest fleet master key accepted, in bytes.
const MinMasterLen = 16

// fleetInfo prefixes the identity in the HKDF info: a new derivation gets a new prefix.
const fleetInfo = "coapgw psk v1 "

// DeriveKey is a device's fleet key: HKDF-SHA256(secret = master, salt = nil,
// info = "coapgw psk v1 " + identity), 16 bytes.
func DeriveKey(master []byte, identity string) ([]byte, error) {
	if len(master) < MinMasterLen {
		return nil, fmt.Errorf("fleet master key: %d bytes, want at least %d", len(master), MinMasterLen)
	}
	return hkdf.Key(sha256.New, master, nil, fleetInfo+identity, KeyLen)
}

// Revoker says whether an identity was revoked (RevocationFile).
type Revoker interface {
	Revoked(ctx context.Context, identity string) (bool, error)
}

// Fleet is the fleet key source: every valid identity has the key derived from the master key,
// unless revoked. Every thing is bound.
type Fleet struct {
	master  []byte
	revoked Revoker // nil: none
}

// NewFleet returns the fleet source for master (at least MinMasterLen bytes); revoked may be nil.
func NewFleet(master []byte, revoked Revoker) (*Fleet, error) {
	if len(master) < MinMasterLen {
		return nil, fmt.Errorf("fleet master key: %d bytes, want at least %d", len(master), MinMasterLen)
	}
	return &Fleet{master: append([]byte(nil), master...), revoked: revoked}, nil
}

// Lookup derives the identity's key, unless the identity is malformed (ErrUnknown) or revoked
// (ErrRevoked).
func (f *Fleet) Lookup(ctx context.Context, identity string) (Credential, error) {
	typ, thing, err := SplitIdentity(identity)
	if err != nil {
		return Credential{}, fmt.Errorf("%w: %w", ErrUnknown, err)
	}
	if f.revoked != nil {
		r, err := f.revoked.Revoked(ctx, identity)
		if err != nil {
			return Credential{}, err
		}
		if r {
			return Credential{}, fmt.Errorf("%s: %w", identity, ErrRevoked)
		}
	}
	key, err := DeriveKey(f.master, identity)
	if err != nil {
		return Credential{}, err
	}
	return Credential{Identity: identity, Type: typ, Thing: thing, Key: key}, nil
}

// Bound is true: with fleet keys any thing can have a key, so none may be written over plain
// CoAP under the policy "unbound".
func (f *Fleet) Bound(context.Context, string, string) (bool, error) { return true, nil }

// BoundBytes is Bound without allocating: true.
func (f *Fleet) BoundBytes(_, _ []byte) (bool, error) { return true, nil }

// Generation changes when the revocation list does (0 without one).
func (f *Fleet) Generation() uint64 {
	if g, ok := f.revoked.(interface{ Generation() uint64 }); ok {
		return g.Generation()
	}
	return 0
}

// secretsAPI is the one Secrets Manager call the fleet source makes.
type secretsAPI interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

var _ secretsAPI = (*secretsmanager.Client)(nil)

// MasterFromSecret reads the fleet master key from AWS Secrets Manager: the secret's binary
// value as it is, or its string value as key text (ParseKey).
func MasterFromSecret(ctx context.Context, cfg aws.Config, arn string) ([]byte, error) {
	return masterFromSecret(ctx, secretsmanager.NewFromConfig(cfg), arn)
}

func masterFromSecret(ctx context.Context, api secretsAPI, arn string) ([]byte, error) {
	out, err := api.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(arn)})
	if err != nil {
		return nil, fmt.Errorf("fleet master key from secret %s: %w", arn, err)
	}
	var key []byte
	switch {
	case len(out.SecretBinary) > 0:
		key = out.SecretBinary
	case out.SecretString != nil:
		if key, err = ParseKey(*out.SecretString); err != nil {
			return nil, fmt.Errorf("fleet master key from secret %s: %w", arn, err)
		}
	default:
		return nil, fmt.Errorf("fleet master key from secret %s: %w", arn, errors.New("secret has no value"))
	}
	if len(key) < MinMasterLen {
		return nil, fmt.Errorf("fleet master key from secret %s: %d bytes, want at least %d", arn, len(key), MinMasterLen)
	}
	return key, nil
}
