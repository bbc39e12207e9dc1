package coapserver

import "net/netip"

// HandleSession processes one datagram that a secure transport decrypted from an authenticated
// session. key stands for the session: deduplication remembers (key, MID), and the Sender is
// given key to answer, so a transport whose peers change address mid-session (DTLS with
// Connection IDs, RFC 9146) passes a key that stays the same for the session's life, and maps it
// back to the session in its Sender. addr is the address the datagram came from
// (Request.Peer) and identity what the session authenticated (Request.Identity). data is not
// retained after it returns.
func (e *Endpoint) HandleSession(key, addr netip.AddrPort, identity string, data []byte) {
	e.handle(key, addr, identity, data)
}
