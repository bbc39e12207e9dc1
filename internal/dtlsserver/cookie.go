package dtlsserver

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"net/netip"
	"sync"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/protocol"
	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/protocol/handshake"
	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/protocol/recordlayer"
)

// The stateless cookie exchange (RFC 6347 §4.2.1): the reader answers a ClientHello without a
// valid cookie with a HelloVerifyRequest itself, keeping nothing; only a ClientHello that
// returns a valid cookie starts a handshake (a pion Conn, told with dtls.WithHelloVerified
// where to continue). The cookie is an HMAC-SHA256, truncated to cookieLen bytes, over the
// client's address and port and the ClientHello's fields that must not change between its
// two ClientHellos (version, random, session_id, cipher_suites, compression_methods), keyed
// by a random secret that is replaced every cookieRotation; the previous secret is still
// accepted, so a cookie is valid for at least cookieRotation.

const (
	cookieLen      = 16
	cookieRotation = 2 * time.Minute
	// clientHelloMin is the shortest ClientHello body: version, random, three empty vectors'
	// lengths, one cipher suite and one compression method.
	clientHelloMin = 2 + handshake.RandomLength + 1 + 1 + 2 + 2 + 1 + 1
)

// helloFields is what the cookie exchange reads from a datagram holding an epoch-0 ClientHello
// in one unfragmented handshake record. The slices point into the datagram.
type helloFields struct {
	recordSeq  uint64 // the record's sequence number
	messageSeq uint16 // the handshake message_seq
	cookie     []byte
	prefix     []byte // client_version, random and session_id (with its length)
	suites     []byte // cipher_suites and compression_methods (with their lengths)
}

// parseClientHello reads data as a datagram starting with a ClientHello record; false if it is
// not one, or is fragmented (a stateless server cannot reassemble it).
func parseClientHello(data []byte) (helloFields, bool) {
	var h helloFields
	// The record header (pion's recordlayer.Header.Unmarshal does not read the length).
	if len(data) < recordlayer.FixedHeaderSize || protocol.ContentType(data[0]) != protocol.ContentTypeHandshake ||
		data[1] != protocol.Version1_2.Major || data[epochOffset] != 0 || data[epochOffset+1] != 0 {
		return h, false
	}
	length := int(binary.BigEndian.Uint16(data[recordlayer.FixedHeaderSize-2:]))
	if length > len(data)-recordlayer.FixedHeaderSize {
		return h, false
	}
	h.recordSeq = uint64(binary.BigEndian.Uint16(data[5:]))<<32 | uint64(binary.BigEndian.Uint32(data[7:]))
	fragment := data[recordlayer.FixedHeaderSize : recordlayer.FixedHeaderSize+length]
	var hs handshake.Header
	if err := hs.Unmarshal(fragment); err != nil || hs.Type != handshake.TypeClientHello || hs.FragmentOffset != 0 ||
		hs.FragmentLength != hs.Length || int(hs.Length) > len(fragment)-handshake.HeaderLength {
		return h, false
	}
	body := fragment[handshake.HeaderLength : handshake.HeaderLength+int(hs.Length)]
	if len(body) < clientHelloMin {
		return h, false
	}
	h.messageSeq = hs.MessageSequence
	i := 2 + handshake.RandomLength
	// session_id<0..32>, cookie<0..255>, cipher_suites<2..2^16-2>, compression_methods<1..2^8-1>
	sid := int(body[i])
	if sid > 32 || i+1+sid+1 > len(body) {
		return h, false
	}
	i += 1 + sid
	h.prefix = body[:i]
	c := int(body[i])
	if i+1+c+2 > len(body) {
		return h, false
	}
	h.cookie = body[i+1 : i+1+c]
	i += 1 + c
	start := i
	cs := int(binary.BigEndian.Uint16(body[i:]))
	if cs < 2 || cs%2 != 0 || i+2+cs+1 > len(body) {
		return h, false
	}
	i += 2 + cs
	cm := int(body[i])
	if cm < 1 || i+1+cm > len(body) {
		return h, false
	}
	h.suites = body[start : i+1+cm]
	return h, true
}

// cookieJar makes and checks cookies. The reader is its only user but for tests: the lock is
// never contended.
type cookieJar struct {
	mu        sync.Mutex
	now       func() time.Time
	rotateAt  time.Time
	cur, prev hash.Hash // HMAC-SHA256 keyed by the current and the previous secret
	sum       [sha256.Size]byte
	addr      [18]byte // the address and port being hashed
}

func newCookieJar(now func() time.Time) *cookieJar {
	j := &cookieJar{now: now}
	j.rotate() // twice, so that both secrets are set
	j.rotate()
	return j
}

// rotate replaces the previous secret by the current one and the current one by a new one;
// j.mu is held (or j is new).
func (j *cookieJar) rotate() {
	var key [32]byte
	_, _ = rand.Read(key[:])
	j.prev, j.cur = j.cur, hmac.New(sha256.New, key[:])
	j.rotateAt = j.now().Add(cookieRotation)
}

// compute writes into j.sum the cookie for h from addr under mac; j.mu is held.
func (j *cookieJar) compute(mac hash.Hash, h *helloFields, addr netip.AddrPort) []byte {
	ip := addr.Addr().As16()
	copy(j.addr[:], ip[:])
	binary.BigEndian.PutUint16(j.addr[16:], addr.Port())
	mac.Reset()
	mac.Write(j.addr[:])
	mac.Write(h.prefix)
	mac.Write(h.suites)
	return mac.Sum(j.sum[:0])[:cookieLen]
}

// valid says whether h carries a cookie made for it and addr under the current or the
// previous secret.
func (j *cookieJar) valid(h *helloFields, addr netip.AddrPort) bool {
	if len(h.cookie) != cookieLen {
		return false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.now().After(j.rotateAt) {
		j.rotate()
	}
	return hmac.Equal(h.cookie, j.compute(j.cur, h, addr)) || hmac.Equal(h.cookie, j.compute(j.prev, h, addr))
}

// hvrLen is the length of a HelloVerifyRequest record.
const hvrLen = recordlayer.FixedHeaderSize + handshake.HeaderLength + 3 + cookieLen

// appendHelloVerifyRequest appends to dst the HelloVerifyRequest record that answers h from
// addr: the current secret's cookie, in a record numbered as h's record (RFC 6347 §4.2.1) and
// a message numbered as h's message (what the client's next ClientHello, and the server's
// ServerHello after it, will carry). Written field by field with pion's constants (what pion's
// RecordLayer.Marshal would make: TestHelloVerifyRequest compares them), without allocating.
func (j *cookieJar) appendHelloVerifyRequest(dst []byte, h *helloFields, addr netip.AddrPort) []byte {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.now().After(j.rotateAt) {
		j.rotate()
	}
	const body = 3 + cookieLen // server_version, cookie<0..255>
	v := protocol.Version1_2
	dst = append(dst, byte(protocol.ContentTypeHandshake), v.Major, v.Minor, 0, 0) // epoch 0
	dst = binary.BigEndian.AppendUint16(dst, uint16(h.recordSeq>>32))
	dst = binary.BigEndian.AppendUint32(dst, uint32(h.recordSeq))
	dst = binary.BigEndian.AppendUint16(dst, handshake.HeaderLength+body)
	dst = append(dst, byte(handshake.TypeHelloVerifyRequest), 0, 0, body) // length (uint24)
	dst = binary.BigEndian.AppendUint16(dst, h.messageSeq)
	dst = append(dst, 0, 0, 0, 0, 0, body) // fragment_offset 0, fragment_length (uint24)
	dst = append(dst, v.Major, v.Minor, cookieLen)
	return append(dst, j.compute(j.cur, h, addr)...)
}

// verifyHello checks the cookie of data, a datagram starting with an epoch-0 ClientHello from
// addr. Without a valid one it answers with a HelloVerifyRequest (if that is not longer than
// the ClientHello: no amplification) and returns false, keeping nothing; with one it returns
// the ClientHello's numbers for dtls.WithHelloVerified.
func (s *Server) verifyHello(data []byte, from netip.AddrPort) (helloFields, bool) {
	h, ok := parseClientHello(data)
	if !ok {
		s.m.disp(dispBadHello)
		return h, false
	}
	if s.cookies.valid(&h, from) {
		return h, true
	}
	var buf [hvrLen]byte
	hvr := s.cookies.appendHelloVerifyRequest(buf[:0], &h, from)
	if len(hvr) > len(data) {
		s.m.disp(dispBadHello)
		return h, false
	}
	if _, err := s.conn.WriteToUDPAddrPort(hvr, from); err != nil {
		s.log.Debug("dtls hello verify request", "peer", from, "err", err)
	}
	if len(h.cookie) > 0 {
		s.m.disp(dispBadCookie) // forged, stale, or made for another address or ClientHello
	} else {
		s.m.disp(dispHelloVerify)
	}
	return h, false
}
