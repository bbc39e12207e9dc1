package ingest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
)

// Amplification (RFC 7252 §11.3). Over UDP anyone can send a request with a victim's address as
// its source; a server answering with more bytes than it received amplifies the attack. The
// gateway keeps every response to a peer whose address it has not verified within
// maxAmplification (coapserver.MaxAmplification) times the request datagram's size:
//
//   - an error response drops its diagnostic payload if the payload would exceed that (RFC 7252
//     §5.5.2 makes it optional; the response code stays): ResponseWriter.Diagnostic;
//   - GET /health and GET /.well-known/core, whose answers can exceed it, first answer 4.01
//     Unauthorized with an Echo option (RFC 9175 §2.4): a client that repeats the request with
//     the Echo value has shown that it receives at its address and gets the full answer
//     (aiocoap does this by itself). A request padded to a third of the answer's size (a longer
//     token, say) needs no Echo.
//
// Echo values are stateless: 4 bytes of time (Unix seconds) and 8 bytes of HMAC-SHA256 of that
// time and the peer's address, with a key drawn when the handler is made; a value is good for
// echoLifetime.
const (
	maxAmplification = coapserver.MaxAmplification
	echoLifetime     = 60 * time.Second
	echoLen          = 12
)

func newEchoKey() [32]byte {
	var k [32]byte
	rand.Read(k[:]) // never fails (crypto/rand)
	return k
}

func (h *Handler) echoMAC(ts uint32, peer netip.AddrPort) []byte {
	m := hmac.New(sha256.New, h.echoKey[:])
	var b [4 + 16 + 2]byte
	binary.BigEndian.PutUint32(b[:4], ts)
	a := peer.Addr().As16()
	copy(b[4:20], a[:])
	binary.BigEndian.PutUint16(b[20:], peer.Port())
	m.Write(b[:])
	return m.Sum(nil)[:echoLen-4]
}

// makeEcho returns an Echo value for peer at now.
func (h *Handler) makeEcho(peer netip.AddrPort, now time.Time) []byte {
	ts := uint32(now.Unix())
	v := binary.BigEndian.AppendUint32(make([]byte, 0, echoLen), ts)
	return append(v, h.echoMAC(ts, peer)...)
}

// validEcho reports whether v is an Echo value this handler made for peer within echoLifetime.
func (h *Handler) validEcho(v []byte, peer netip.AddrPort, now time.Time) bool {
	if len(v) != echoLen {
		return false
	}
	ts := binary.BigEndian.Uint32(v)
	age := now.Unix() - int64(ts)
	if age < 0 || age > int64(echoLifetime/time.Second) {
		return false
	}
	return hmac.Equal(v[4:], h.echoMAC(ts, peer))
}

// verified decides whether a 2.05 of payloadLen bytes with Content-Format cf may answer r: it
// fits within maxAmplification times the request, or the request carries a valid Echo. If not, it
// answers 4.01 with a fresh Echo value and returns false.
func (h *Handler) verified(w *coapserver.ResponseWriter, r *coapserver.Request, payloadLen int, cf uint16) bool {
	var v [2]byte
	opt := coapmsg.Option{Number: coapmsg.ContentFormat, Value: coapmsg.AppendUint(v[:0], uint32(cf))}
	if w.Size(payloadLen, opt) <= maxAmplification*w.RequestSize() {
		return true
	}
	if h.validEcho(r.Echo(), r.Peer, r.Received) {
		w.PeerVerified()
		return true
	}
	h.echoChallenges.Inc()
	w.SetOption(coapmsg.Echo, h.makeEcho(r.Peer, r.Received))
	w.Respond(coapmsg.Unauthorized, nil)
	return false
}
