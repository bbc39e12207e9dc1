// Package credential says who a DTLS peer is and what it may write: a credential binds a PSK
// identity to the one thing it names. The identity is "{type}/{thing}" (both parts
// record.ValidName), e.g. "sensor/dev-1"; it is the PSK identity the device sends and what
// coapserver.Request.Identity carries for an authenticated request.
//
// Two sources implement Store:
//
//   - Local (local.go): per-device keys in the local registry, random 16 bytes each, managed with
//     coapgw device add|list|rotate|revoke. Keys are stored sealed with the operator key
//     (AES-256-GCM, seal.go); the registry never sees one in the clear. Local keeps every
//     credential decrypted in memory and checks the registry for changes (a generation counter,
//     one query) at most every Refresh (default 2s), so Lookup and Bound are map reads and a
//     change made by another process (coapgw device) is seen within Refresh.
//   - Fleet (fleet.go): for stateless gateways, PSK = HKDF-SHA256(master key, salt nil,
//     info "coapgw psk v1 " + identity, 16 bytes), so any gateway authenticates any device with
//     no lookup. The master key (at least 16 bytes) comes from a file, an environment variable,
//     or AWS Secrets Manager by ARN. Revocation is a file of identities (revocation.go) checked
//     at every Lookup and reloaded within RevocationCheck (default 1s) of a change. With fleet
//     keys every thing is bound: any thing can have a key, the gateway cannot know which have.
//
// Revocation takes effect for new handshakes within Refresh (Local) or RevocationCheck (Fleet).
// For a live session the DTLS layer asks again: Lookup is cheap (a map read; for Fleet also one
// HKDF), so calling it for a session's identity at most once a second bounds how long a revoked
// identity keeps writing to that interval plus Refresh or RevocationCheck. Generation, on both
// stores, changes whenever a credential may have, for a layer that wants to ask only then.
//
// Keys as text (operator key, fleet master key, --psk) are hex or base64 (standard or URL
// alphabet, padded or not), surrounding white space ignored (ParseKey).
//
// Configuration (Config; the keys internal/config is to expose): key_file / COAPGW_KEY_FILE
// and COAPGW_KEY (operator key, 32 bytes), fleet_key_file / COAPGW_FLEET_KEY_FILE and
// COAPGW_FLEET_KEY, fleet_key_secret_arn / COAPGW_FLEET_KEY_SECRET_ARN (fleet master key),
// revocation_file, revocation_check (1s), credential_refresh (2s). The package exports no
// metrics.
package credential

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/coapgw/coapgw/internal/record"
)

// Credential is what a PSK identity may do: write the one thing it names. Key is shared with the
// store: callers must not modify it.
type Credential struct {
	Identity, Type, Thing string
	Key                   []byte
}

var (
	// ErrUnknown is returned by Lookup for an identity that has no credential.
	ErrUnknown = errors.New("unknown identity")
	// ErrRevoked is returned by Lookup for an identity whose credential was revoked.
	ErrRevoked = errors.New("identity revoked")
)

// Store is a credential source. Lookup is called on every DTLS handshake (must be fast,
// concurrent-safe); Bound says whether a thing has a credential (plain CoAP policy "unbound").
type Store interface {
	Lookup(ctx context.Context, identity string) (Credential, error)
	Bound(ctx context.Context, typ, thing string) (bool, error)
}

var (
	_ Store = (*Local)(nil)
	_ Store = (*Fleet)(nil)
)

// KeyLen is the length of a device key (a PSK) in bytes.
const KeyLen = 16

// SplitIdentity splits an identity into the thing's type and name, checking both.
func SplitIdentity(identity string) (typ, thing string, err error) {
	typ, thing, ok := strings.Cut(identity, "/")
	if !ok {
		return "", "", fmt.Errorf("identity %q: want {type}/{thing}", identity)
	}
	if !record.ValidName(typ) || !record.ValidName(thing) {
		return "", "", fmt.Errorf("identity %q: type and thing must match [a-zA-Z0-9:_-]{1,128}", identity)
	}
	return typ, thing, nil
}

// PSKFunc adapts a Store to the DTLS transport's PSK hook: the key of the identity the peer
// sent, or an error (ErrUnknown, ErrRevoked, or the store's) that fails the handshake. A
// transport that re-checks a live session calls it again with the session's identity.
func PSKFunc(s Store) func(identity []byte) ([]byte, error) {
	return func(identity []byte) ([]byte, error) {
		c, err := s.Lookup(context.Background(), string(identity))
		if err != nil {
			return nil, err
		}
		return c.Key, nil
	}
}
