// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

package prf

// coapgw patch (PATCH.md): PHash keys one HMAC and resets it between rounds. This test holds
// it to RFC 5246 Section 5's P_hash computed with a new HMAC per round, as pion wrote it.

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"testing"

	"github.com/stretchr/testify/assert"
)

func referencePHash(secret, seed []byte, n int, h HashFunc) []byte {
	mac := func(data ...[]byte) []byte {
		m := hmac.New(h, secret)
		for _, d := range data {
			m.Write(d)
		}

		return m.Sum(nil)
	}
	var out []byte
	a := seed
	for len(out) < n {
		a = mac(a)
		out = append(out, mac(a, seed)...)
	}

	return out[:n]
}

func TestPHashMatchesReference(t *testing.T) {
	seed := []byte("key expansion and some random bytes")
	for _, h := range []HashFunc{sha256.New, sha512.New384} {
		for _, secretLen := range []int{0, 16, 48, 200} {
			secret := make([]byte, secretLen)
			for i := range secret {
				secret[i] = byte(i + 1)
			}
			for _, n := range []int{1, 12, 32, 48, 72, 104, 200} {
				got, err := PHash(secret, seed, n, h)
				assert.NoError(t, err)
				assert.Equal(t, referencePHash(secret, seed, n, h), got, "secret %d, %d bytes", secretLen, n)
			}
		}
	}
}
