// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

package ccm

// coapgw patch (PATCH.md): CCM's key stream is computed a block at a time instead of through
// cipher.NewCTR. These tests hold it to cipher.NewCTR's output, in place and not, and check
// that Open wipes what it decrypted when the tag does not match.

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"testing"

	"github.com/stretchr/testify/assert"
)

// referenceSeal is Seal as pion wrote it, with cipher.NewCTR.
func referenceSeal(c *ccm, nonce, plaintext, adata []byte) []byte {
	tag, err := c.tag(make([]byte, ccmBlockSize), nonce, plaintext, adata)
	if err != nil {
		panic(err)
	}
	var iv, s0 [ccmBlockSize]byte
	iv[0] = c.L - 1
	copy(iv[1:ccmBlockSize-c.L], nonce)
	c.b.Encrypt(s0[:], iv[:])
	for i := 0; i < int(c.M); i++ {
		tag[i] ^= s0[i]
	}
	iv[len(iv)-1] |= 1
	out := make([]byte, len(plaintext)+int(c.M))
	cipher.NewCTR(c.b, iv[:]).XORKeyStream(out, plaintext)
	copy(out[len(plaintext):], tag)

	return out
}

func TestCTRMatchesCipherNewCTR(t *testing.T) {
	block, err := aes.NewCipher(bytes.Repeat([]byte{0x42}, 16))
	assert.NoError(t, err)
	for _, nonceSize := range []int{7, 12, 13} {
		aead, err := NewCCM(block, 8, nonceSize)
		assert.NoError(t, err)
		c, _ := aead.(*ccm)
		nonce := bytes.Repeat([]byte{0x07}, nonceSize)
		adata := []byte("additional data")
		for _, n := range []int{0, 1, 15, 16, 17, 31, 32, 33, 100, 1024, 4099} {
			plaintext := make([]byte, n)
			for i := range plaintext {
				plaintext[i] = byte(i * 7)
			}
			want := referenceSeal(c, nonce, plaintext, adata)
			got := c.Seal(nil, nonce, plaintext, adata)
			assert.Equal(t, want, got, "Seal, nonce %d, %d bytes", nonceSize, n)

			inPlace := append(make([]byte, 0, n+8), plaintext...)
			assert.Equal(t, want, c.Seal(inPlace[:0], nonce, inPlace, adata), "Seal in place, %d bytes", n)

			opened, err := c.Open(nil, nonce, got, adata)
			assert.NoError(t, err)
			assert.True(t, bytes.Equal(plaintext, opened), "Open, %d bytes", n)

			buf := append([]byte(nil), got...)
			opened, err = c.Open(buf[:0], nonce, buf, adata)
			assert.NoError(t, err)
			assert.True(t, bytes.Equal(plaintext, opened), "Open in place, %d bytes", n)

			if n == 0 {
				continue
			}
			forged := append([]byte(nil), got...)
			forged[0] ^= 1
			_, err = c.Open(forged[:0], nonce, forged, adata)
			assert.ErrorIs(t, err, errOpen)
			assert.Equal(t, make([]byte, n), forged[:n], "a failed Open leaves no plaintext, %d bytes", n)
		}
	}
}

func TestCTRCounterCarries(t *testing.T) {
	block, err := aes.NewCipher(make([]byte, 16))
	assert.NoError(t, err)
	c := &ccm{b: block, M: 8, L: 2}
	iv := bytes.Repeat([]byte{0xff}, ccmBlockSize)
	iv[0] = 0x01
	src := make([]byte, 3*ccmBlockSize)
	want := make([]byte, len(src))
	cipher.NewCTR(block, iv).XORKeyStream(want, src)
	got := make([]byte, len(src))
	c.ctr(got, src, append([]byte(nil), iv...), make([]byte, ccmBlockSize))
	assert.Equal(t, want, got)
}
