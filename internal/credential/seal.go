package credential

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// OperatorKeyLen is the length of the operator key that seals keys at rest: AES-256.
const OperatorKeyLen = 32

// Sealed key format, version 1:
//
//	1 byte    version (1)
//	4 bytes   key id: the first 4 bytes of SHA-256("coapgw operator key id" || operator key)
//	12 bytes  nonce (random)
//	rest      AES-256-GCM ciphertext and 16-byte tag; additional data: the identity
//
// The key id says which operator key sealed a key, so that a wrong key fails with a clear error
// rather than a bare authentication failure, and so that a Sealer holding the new and the old
// operator keys can open both while keys are re-sealed (rotation of the operator key). The
// identity as additional data binds a sealed key to its row: one copied to another identity
// does not open.
const (
	sealVersion = 1
	sealHeader  = 1 + 4 + 12
)

// ErrWrongOperatorKey is returned by Open for a key sealed with an operator key the Sealer does
// not hold.
var ErrWrongOperatorKey = errors.New("sealed with another operator key")

// Sealer encrypts keys at rest with the operator key.
type Sealer struct {
	seal  sealKey   // seals
	other []sealKey // open only (older operator keys)
}

type sealKey struct {
	id   uint32
	aead cipher.AEAD
}

// NewSealer seals with key (32 bytes) and opens what key or any of older sealed.
func NewSealer(key []byte, older ...[]byte) (*Sealer, error) {
	s := &Sealer{}
	for i, k := range append([][]byte{key}, older...) {
		if len(k) != OperatorKeyLen {
			return nil, fmt.Errorf("operator key: %d bytes, want %d", len(k), OperatorKeyLen)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("operator key: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("operator key: %w", err)
		}
		sk := sealKey{id: KeyID(k), aead: aead}
		if i == 0 {
			s.seal = sk
		} else {
			s.other = append(s.other, sk)
		}
	}
	return s, nil
}

// KeyID is the id an operator key is known by in sealed keys.
func KeyID(operatorKey []byte) uint32 {
	h := sha256.New()
	h.Write([]byte("coapgw operator key id"))
	h.Write(operatorKey)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// Seal encrypts a device key for identity.
func (s *Sealer) Seal(identity string, key []byte) []byte {
	out := make([]byte, sealHeader, sealHeader+len(key)+s.seal.aead.Overhead())
	out[0] = sealVersion
	binary.BigEndian.PutUint32(out[1:5], s.seal.id)
	rand.Read(out[5:sealHeader])
	return s.seal.aead.Seal(out, out[5:sealHeader], key, []byte(identity))
}

// Open decrypts a key Seal sealed for identity.
func (s *Sealer) Open(identity string, sealed []byte) ([]byte, error) {
	if len(sealed) < sealHeader || sealed[0] != sealVersion {
		return nil, fmt.Errorf("sealed key of %s: unknown format", identity)
	}
	id := binary.BigEndian.Uint32(sealed[1:5])
	for _, k := range append([]sealKey{s.seal}, s.other...) {
		if k.id != id {
			continue
		}
		key, err := k.aead.Open(nil, sealed[5:sealHeader], sealed[sealHeader:], []byte(identity))
		if err != nil {
			return nil, fmt.Errorf("sealed key of %s: corrupt or not sealed for this identity", identity)
		}
		return key, nil
	}
	return nil, fmt.Errorf("sealed key of %s: %w (key id %08x, this operator key is %08x)", identity,
		ErrWrongOperatorKey, id, s.seal.id)
}
