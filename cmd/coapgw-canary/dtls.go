package main

import (
	"context"
	"errors"
	"time"

	"github.com/coapgw/coapgw/internal/coapclient"
)

// handshakeError is a DTLS handshake that did not complete; its message says why, as far as
// the canary can tell.
type handshakeError = coapclient.HandshakeError

// probeDTLS opens a DTLS 1.2 session to target as identity with key psk, within timeout, and
// checks GET /health over it as probe does over plain UDP (coapclient.DialDTLS: CCM_8 and GCM,
// Connection IDs). It returns the handshake's duration with the probe's error; a handshake that
// does not complete is a *handshakeError. The health is what the gateway's answer said.
func probeDTLS(ctx context.Context, target string, timeout time.Duration, identity string, psk []byte) (time.Duration, gatewayHealth, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	conn, err := coapclient.DialDTLS(ctx, target, identity, psk)
	if err != nil {
		if _, ok := errors.AsType[*handshakeError](err); ok {
			return time.Since(start), gatewayHealth{}, err
		}
		return 0, gatewayHealth{}, err
	}
	hs := time.Since(start)
	defer conn.Close() // sends close_notify, so the gateway can drop the session at once
	h, err := checkHealth(ctx, conn)
	return hs, h, err
}
