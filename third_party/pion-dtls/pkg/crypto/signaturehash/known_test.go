// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

package signaturehash

// coapgw patch (PATCH.md): Unmarshal checks against maps built once. This test holds every
// possible scheme's verdict to the one signature.Algorithms and hash.Algorithms give.

import (
	"crypto/tls"
	"errors"
	"testing"

	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/crypto/hash"
	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/crypto/signature"
	"github.com/stretchr/testify/assert"
)

func TestUnmarshalKnownAlgorithms(t *testing.T) {
	assert.Equal(t, signature.Algorithms(), knownSignatures)
	assert.Equal(t, hash.Algorithms(), knownHashes)

	accepted, badSignature := 0, 0
	for scheme := range 1 << 16 {
		var a Algorithm
		err := a.Unmarshal(tls.SignatureScheme(scheme))
		_, sigOK := signature.Algorithms()[a.Signature]
		_, hashOK := hash.Algorithms()[a.Hash]
		switch {
		case err == nil:
			assert.True(t, sigOK && hashOK && a.Hash != hash.None, "scheme %#04x accepted", scheme)
			accepted++
		case errors.Is(err, errInvalidSignatureAlgorithm):
			assert.False(t, sigOK, "scheme %#04x refused", scheme)
			badSignature++
		}
	}
	assert.Greater(t, accepted, 10)
	assert.Greater(t, badSignature, 10)
}
