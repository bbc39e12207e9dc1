package dtlsrecord

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/coapgw/coapgw/third_party/pion-dtls"
	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/crypto/ciphersuite"
	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/crypto/prf"
	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/protocol"
	"github.com/coapgw/coapgw/third_party/pion-dtls/pkg/protocol/recordlayer"
)

// Content types (RFC 5246 §6.2.1, RFC 9146 §4).
const (
	TypeChangeCipherSpec = 20
	TypeAlert            = 21
	TypeHandshake        = 22
	TypeApplicationData  = 23
	TypeTLS12CID         = 25
)

// HeaderLen is a record header's length without Connection ID: type(1) version(2) epoch(2)
// sequence number(6) length(2).
const HeaderLen = recordlayer.FixedHeaderSize

const maxSeq = recordlayer.MaxSequenceNumber

// Errors of Open: the record is to be dropped. ErrShort and ErrMalformed leave the rest of the
// datagram unreadable; after the others the next record starts n bytes on.
var (
	ErrShort     = errors.New("dtls record: truncated")
	ErrMalformed = errors.New("dtls record: malformed")
	ErrEpoch     = errors.New("dtls record: not of the session's epoch")
	ErrCID       = errors.New("dtls record: wrong or missing connection id")
	ErrReplay    = errors.New("dtls record: replayed or too old")
	ErrAuth      = errors.New("dtls record: authentication failed")
	ErrAsleep    = errors.New("dtls record: keys not derived (Wake)")
	ErrExhausted = errors.New("dtls record: sequence numbers exhausted")
)

// suite is what pion's AEAD cipher suites (ciphersuite.CCM, ciphersuite.GCM) provide.
type suite interface {
	Encrypt(pkt *recordlayer.RecordLayer, raw []byte) ([]byte, error)
	Decrypt(h recordlayer.Header, in []byte) ([]byte, error)
}

// suiteSpec is how a cipher suite's keys are made (RFC 5246 §6.3 via pion's prf).
type suiteSpec struct {
	keyLen  int
	newAEAD func(localKey, localIV, remoteKey, remoteIV []byte) (suite, error)
}

func suiteFor(id uint16) (suiteSpec, error) {
	ccm := func(tag ciphersuite.CCMTagLen) func(lk, li, rk, ri []byte) (suite, error) {
		return func(lk, li, rk, ri []byte) (suite, error) { return ciphersuite.NewCCM(tag, lk, li, rk, ri) }
	}
	switch dtls.CipherSuiteID(id) {
	case dtls.TLS_PSK_WITH_AES_128_CCM_8:
		return suiteSpec{16, ccm(ciphersuite.CCMTagLength8)}, nil
	case dtls.TLS_PSK_WITH_AES_128_CCM:
		return suiteSpec{16, ccm(ciphersuite.CCMTagLength)}, nil
	case dtls.TLS_PSK_WITH_AES_128_GCM_SHA256:
		return suiteSpec{16, func(lk, li, rk, ri []byte) (suite, error) { return ciphersuite.NewGCM(lk, li, rk, ri) }}, nil
	}
	return suiteSpec{}, fmt.Errorf("dtls state: cipher suite %#04x not supported", id)
}

// Conn is the record layer of one established session.
type Conn struct {
	st     State  // SequenceNumber is the next to write; RemoteSequenceNumber is stale (see win)
	aead   suite  // nil while asleep (Sleep)
	win    Window // records accepted from the peer
	cidTpl []byte // len(LocalConnectionID) bytes: tells pion's Decrypt the Connection ID's length
	pkt    recordlayer.RecordLayer
	raw    []byte // Seal's scratch
}

// New makes the record layer of st, awake (keys derived).
func New(st State) (*Conn, error) {
	if err := st.check(); err != nil {
		return nil, err
	}
	c := &Conn{st: st, win: NewWindow(st.RemoteSequenceNumber)}
	c.cidTpl = make([]byte, len(st.LocalConnectionID))
	if err := c.Wake(); err != nil {
		return nil, err
	}
	return c, nil
}

// NewAsleep is New without deriving the keys: Wake does that before the first Open or Seal.
func NewAsleep(st State) (*Conn, error) {
	if err := st.check(); err != nil {
		return nil, err
	}
	return &Conn{st: st, win: NewWindow(st.RemoteSequenceNumber), cidTpl: make([]byte, len(st.LocalConnectionID))}, nil
}

// Awake says whether the keys are derived.
func (c *Conn) Awake() bool { return c.aead != nil }

// Sleep drops the derived keys (and the cipher state built from them), keeping the master
// secret: a session that is quiet holds a few hundred bytes.
func (c *Conn) Sleep() { c.aead = nil }

// Wake derives the keys from the master secret (a no-op if awake).
func (c *Conn) Wake() error {
	if c.aead != nil {
		return nil
	}
	spec, err := suiteFor(c.st.CipherSuiteID)
	if err != nil {
		return err
	}
	client, server := c.st.RemoteRandom[:], c.st.LocalRandom[:]
	if c.st.IsClient {
		client, server = server, client
	}
	k, err := prf.GenerateEncryptionKeys(c.st.MasterSecret, client, server, 0, spec.keyLen, 4, sha256.New)
	if err != nil {
		return fmt.Errorf("derive dtls keys: %w", err)
	}
	lk, li, rk, ri := k.ServerWriteKey, k.ServerWriteIV, k.ClientWriteKey, k.ClientWriteIV
	if c.st.IsClient {
		lk, li, rk, ri = rk, ri, lk, li
	}
	a, err := spec.newAEAD(lk, li, rk, ri)
	if err != nil {
		return fmt.Errorf("dtls cipher: %w", err)
	}
	c.aead = a
	return nil
}

// State is the session's state now, for a later New (e.g. after a restart): the next sequence
// number to write, and the peer's numbers accepted so far (all refused after it, as when pion
// resumes a state).
func (c *Conn) State() State {
	st := c.st
	st.RemoteSequenceNumber = c.win.Next()
	return st
}

// Identity is the PSK identity the peer authenticated with (on a server).
func (c *Conn) Identity() []byte { return c.st.IdentityHint }

// Record is an opened record.
type Record struct {
	Type uint8  // the real content type (inside DTLSInnerPlaintext for a tls12_cid record)
	Data []byte // its plaintext, aliasing the input
	Seq  uint64
	// Newest: its sequence number is the highest accepted yet (RFC 9146 §6: only such a record
	// may move the peer's address).
	Newest bool
}

// Open authenticates and decrypts, in place, the record at the start of b, and returns it with
// the record's length n. A record is accepted once: its number enters the replay window only
// when it authenticates. On an error the record is to be dropped silently (RFC 6347 §4.1.2.7).
func (c *Conn) Open(b []byte) (r Record, n int, err error) {
	if len(b) < HeaderLen {
		return Record{}, len(b), ErrShort
	}
	typ := b[0]
	hlen := HeaderLen
	if typ == TypeTLS12CID {
		hlen += len(c.cidTpl)
	}
	if len(b) < hlen {
		return Record{}, len(b), ErrShort
	}
	n = hlen + int(binary.BigEndian.Uint16(b[hlen-2:]))
	if n > len(b) {
		return Record{}, len(b), ErrShort
	}
	r.Type = typ
	epoch := binary.BigEndian.Uint16(b[3:])
	r.Seq = uint64(b[5])<<40 | uint64(b[6])<<32 | uint64(binary.BigEndian.Uint32(b[7:]))
	switch {
	case epoch != c.st.RemoteEpoch:
		return r, n, ErrEpoch
	case b[1] != protocol.Version1_2.Major || (b[2] != protocol.Version1_2.Minor && b[2] != protocol.Version1_0.Minor):
		return r, n, ErrMalformed
	case (typ == TypeTLS12CID) != (len(c.cidTpl) > 0),
		typ == TypeTLS12CID && !bytes.Equal(b[HeaderLen-2:HeaderLen-2+len(c.cidTpl)], c.st.LocalConnectionID):
		return r, n, ErrCID
	case !c.win.Check(r.Seq):
		return r, n, ErrReplay
	case c.aead == nil:
		return r, n, ErrAsleep
	}
	out, err := c.aead.Decrypt(recordlayer.Header{ConnectionID: c.cidTpl}, b[:n])
	if err != nil {
		return r, n, ErrAuth
	}
	data := out[hlen:]
	if typ == TypeTLS12CID { // DTLSInnerPlaintext: content, real type, zeros
		i := len(data) - 1
		for i >= 0 && data[i] == 0 {
			i--
		}
		if i < 0 {
			return r, n, ErrMalformed // authenticated, but no content type: RFC 9146 §4
		}
		r.Type, data = data[i], data[:i]
	}
	r.Data = data
	r.Newest = c.win.Accept(r.Seq)
	return r, n, nil
}

// Seal appends to dst a record of type typ carrying payload, with the session's next sequence
// number (as a tls12_cid record when the peer asked for a Connection ID). With a nil dst it
// returns the record as the cipher suite made it, without a copy.
func (c *Conn) Seal(dst []byte, typ uint8, payload []byte) ([]byte, error) {
	if c.aead == nil {
		return dst, ErrAsleep
	}
	if c.st.SequenceNumber > maxSeq {
		return dst, ErrExhausted
	}
	seq := c.st.SequenceNumber
	c.st.SequenceNumber++
	cid := c.st.RemoteConnectionID
	outer := typ
	body := len(payload)
	if len(cid) > 0 {
		outer, body = TypeTLS12CID, body+1
	}
	h := &c.pkt.Header
	*h = recordlayer.Header{ContentType: protocol.ContentType(outer), Version: protocol.Version1_2, Epoch: c.st.LocalEpoch, SequenceNumber: seq, ConnectionID: cid, ContentLen: uint16(body)}
	raw := append(c.raw[:0], outer, h.Version.Major, h.Version.Minor, byte(h.Epoch>>8), byte(h.Epoch),
		byte(seq>>40), byte(seq>>32), byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq))
	raw = append(raw, cid...)
	raw = append(raw, byte(body>>8), byte(body))
	raw = append(raw, payload...)
	if len(cid) > 0 {
		raw = append(raw, typ) // DTLSInnerPlaintext without padding
	}
	c.raw = raw
	rec, err := c.aead.Encrypt(&c.pkt, raw)
	if err != nil {
		return dst, fmt.Errorf("seal dtls record: %w", err)
	}
	if dst == nil {
		return rec, nil
	}
	return append(dst, rec...), nil
}
