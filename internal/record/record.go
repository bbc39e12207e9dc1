// Package record defines the unit of telemetry that travels from the gateway's spool to the queue
// and the processor, its versioned, binary-safe encoding, and the rules its fields follow: the
// AWS IoT name rule for type and id (ValidName), the Content-Format numbers it carries, and what
// each payload format stands for in the JSON model the shadow rules apply to (ToJSON: CBOR maps
// in cbor.go, read a member at a time by CBORReader in cbor_reader.go, SenML packs and their readings in senml.go, senml_json.go and senml_cbor.go).
//
// Encoding, version 1 (all integers big-endian):
//
//	byte     version (1)
//	int64    received_at, Unix nanoseconds
//	uint16   content_format (0xFFFF = absent)
//	uint8    len(gw), gw
//	uint8    len(type), type
//	uint8    len(id), id
//	uint8    len(peer), peer ("ip:port")
//	uvarint  len(payload), payload
//
// The sequence number is not part of the encoding: the spool assigns it and stores it in its own
// frame, and (gw, seq) is the record's idempotency key downstream.
package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// Version is the encoding version written by Append.
const Version = 1

// NoContentFormat marks a request that carried no Content-Format option.
const NoContentFormat = 0xFFFF

// The CoAP Content-Format numbers (RFC 7252 §12.3, RFC 8428 §12.3) of the payloads a record
// carries. The payload is kept as the device sent it; ToJSON says what it stands for.
const (
	FormatJSON      = coapmsg.FormatJSON // application/json: one JSON object
	FormatCBOR      = coapmsg.FormatCBOR // application/cbor: one CBOR map (cbor.go)
	FormatSenMLJSON = 110                // application/senml+json (senml.go)
	FormatSenMLCBOR = 112                // application/senml+cbor (senml.go)
)

// Record is one accepted telemetry message.
type Record struct {
	Seq           uint64
	GW            string
	ReceivedAt    time.Time
	Type          string
	ID            string
	ContentFormat uint16
	Payload       []byte
	Peer          string
}

// ErrTooLong: a string field longer than 255 bytes.
var ErrTooLong = errors.New("record field longer than 255 bytes")

// Append encodes r onto b.
func Append(b []byte, r *Record) ([]byte, error) {
	if len(r.GW) > 255 || len(r.Type) > 255 || len(r.ID) > 255 || len(r.Peer) > 255 {
		return b, ErrTooLong
	}
	b = AppendHeader(b, r.ReceivedAt.UnixNano(), r.ContentFormat, r.GW)
	b = appendStr(b, r.Type)
	b = appendStr(b, r.ID)
	b = appendStr(b, r.Peer)
	return AppendPayload(b, r.Payload), nil
}

// AppendHeader, AppendField and AppendPayload encode a record piece by piece without building a
// Record (the ingest hot path): header, then the type, id and peer fields, then the payload.
// Fields must be at most 255 bytes; the caller checks.
func AppendHeader(b []byte, receivedAtNanos int64, contentFormat uint16, gw string) []byte {
	b = append(b, Version)
	b = binary.BigEndian.AppendUint64(b, uint64(receivedAtNanos))
	b = binary.BigEndian.AppendUint16(b, contentFormat)
	return appendStr(b, gw)
}

// AppendField appends one length-prefixed field (type, id); see AppendHeader.
func AppendField(b []byte, f []byte) []byte {
	b = append(b, byte(len(f)))
	return append(b, f...)
}

// AppendPeer appends the peer field as "ip:port"; see AppendHeader.
func AppendPeer(b []byte, peer netip.AddrPort) []byte {
	i := len(b)
	b = append(b, 0)
	b = peer.AppendTo(b)
	b[i] = byte(len(b) - i - 1)
	return b
}

// AppendPayload appends the payload; see AppendHeader.
func AppendPayload(b []byte, payload []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(payload)))
	return append(b, payload...)
}

func appendStr(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// Decode parses data into r. Strings and Payload are copies; Seq is left as it was.
func Decode(data []byte, r *Record) error {
	if len(data) < 1 {
		return errors.New("empty record")
	}
	if data[0] != Version {
		return fmt.Errorf("record version %d not supported", data[0])
	}
	if len(data) < 11 {
		return errors.New("record truncated in header")
	}
	r.ReceivedAt = time.Unix(0, int64(binary.BigEndian.Uint64(data[1:9]))).UTC()
	r.ContentFormat = binary.BigEndian.Uint16(data[9:11])
	p := data[11:]
	var fields [4]string
	for i := range fields {
		if len(p) < 1 || len(p) < 1+int(p[0]) {
			return errors.New("record truncated in string field")
		}
		fields[i] = string(p[1 : 1+int(p[0])])
		p = p[1+int(p[0]):]
	}
	r.GW, r.Type, r.ID, r.Peer = fields[0], fields[1], fields[2], fields[3]
	n, k := binary.Uvarint(p)
	if k <= 0 || n != uint64(len(p)-k) {
		return errors.New("record payload length does not match")
	}
	r.Payload = append([]byte(nil), p[k:]...)
	return nil
}
