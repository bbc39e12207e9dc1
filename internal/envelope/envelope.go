// Package envelope is the SQS message body that carries one record from a gateway to the processor:
// a small JSON object, versioned, binary-safe, made only of the characters SQS accepts. The contract
// (fields, types, version rule, examples) is docs/envelope.md; this package is its reference
// implementation, used by the gateway's publisher (Encode) and by the processor (Decode).
//
// Shape, version 1:
//
//	{"v":1,"gw":"gw-1","seq":"42","received_at":"2026-05-01T12:00:00.123456789Z",
//	 "type":"sensor","id":"dev-7","content_format":50,"peer":"192.0.2.1:5683",
//	 "payload":{"temp":21.5}}
//
// The payload travels byte-exact: inline as "payload" when it is a JSON object or array that can be
// embedded verbatim (valid UTF-8, only characters SQS allows, no surrounding whitespace), otherwise
// as standard base64 in "payload_b64". Exactly one of the two is present.
//
// Version rule: v is the major version. Readers reject a v they do not know (ErrVersion) and ignore
// fields they do not know; a writer adds optional fields without changing v and changes v only when
// a reader that ignores the new fields would misread the message.
//
// Message attributes: AttrType and AttrThing (SQS String attributes) repeat the record's type and id
// so that a consumer or an operator can route or look at messages without parsing the body. They are
// a convenience; the body is authoritative.
package envelope

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/coapgw/coapgw/internal/jsonscan"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coapgw/coapgw/internal/record"
)

// Version is the envelope major version written by Encode and the only one Decode accepts.
const Version = 1

// SQS message attribute names set by the publisher (String attributes).
const (
	AttrType  = "coapgw-type"  // the record's thing type
	AttrThing = "coapgw-thing" // the record's thing name (its id)
)

// MaxFieldBytes is the longest gw, type, id or peer a record (and so an envelope) can hold.
const MaxFieldBytes = 255

var (
	// ErrVersion is returned by Decode for an envelope whose major version this reader does not know.
	ErrVersion = errors.New("envelope: unknown major version")
	// ErrMalformed is wrapped by every other Decode error.
	ErrMalformed = errors.New("envelope: malformed")
	// ErrNotText is returned by Encode for a string field that is not valid UTF-8: it cannot be carried
	// in a JSON string, so the record cannot be sent.
	ErrNotText = errors.New("envelope: field is not valid UTF-8")
)

// Encode returns the message body for rec, rec.Seq included.
func Encode(rec record.Record) (string, error) {
	b, err := Append(make([]byte, 0, 200+len(rec.Payload)*4/3), &rec)
	return string(b), err
}

// Append appends the message body for rec to b.
func Append(b []byte, rec *record.Record) ([]byte, error) {
	if rec.GW == "" || rec.Type == "" || rec.ID == "" {
		return b, fmt.Errorf("envelope: gw, type and id are required")
	}
	for _, f := range [...]string{rec.GW, rec.Type, rec.ID, rec.Peer} {
		if len(f) > MaxFieldBytes {
			return b, record.ErrTooLong
		}
		if !utf8.ValidString(f) {
			return b, ErrNotText
		}
	}
	ns := rec.ReceivedAt.UnixNano()
	if !time.Unix(0, ns).Equal(rec.ReceivedAt) {
		return b, fmt.Errorf("envelope: received_at %v out of range", rec.ReceivedAt)
	}
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, Version, 10)
	b = append(b, `,"gw":`...)
	b = appendString(b, rec.GW)
	b = append(b, `,"seq":"`...)
	b = strconv.AppendUint(b, rec.Seq, 10)
	b = append(b, `","received_at":"`...)
	b = time.Unix(0, ns).UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","type":`...)
	b = appendString(b, rec.Type)
	b = append(b, `,"id":`...)
	b = appendString(b, rec.ID)
	if rec.ContentFormat != record.NoContentFormat {
		b = append(b, `,"content_format":`...)
		b = strconv.AppendUint(b, uint64(rec.ContentFormat), 10)
	}
	if rec.Peer != "" {
		b = append(b, `,"peer":`...)
		b = appendString(b, rec.Peer)
	}
	if Inline(rec.Payload) {
		b = append(b, `,"payload":`...)
		b = append(b, rec.Payload...)
	} else {
		b = append(b, `,"payload_b64":"`...)
		b = base64.StdEncoding.AppendEncode(b, rec.Payload)
		b = append(b, '"')
	}
	return append(b, '}'), nil
}

// Inline reports whether a payload is carried verbatim as "payload": a JSON object or array, valid
// UTF-8 of characters SQS allows, starting with its opening and ending with its closing bracket.
func Inline(p []byte) bool {
	if len(p) < 2 {
		return false
	}
	first, last := p[0], p[len(p)-1]
	if !(first == '{' && last == '}' || first == '[' && last == ']') {
		return false
	}
	return Allowed(p) && json.Valid(p)
}

// Allowed reports whether b is valid UTF-8 made only of the characters an SQS message body may hold:
// #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF.
func Allowed(b []byte) bool {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 || !allowedRune(r) {
			return false
		}
		i += n
	}
	return true
}

func allowedRune(r rune) bool {
	switch {
	case r == '\t' || r == '\n' || r == '\r':
		return true
	case r < 0x20:
		return false
	case r <= 0xD7FF:
		return true
	case r < 0xE000:
		return false
	case r <= 0xFFFD:
		return true
	default:
		return r >= 0x10000 && r <= utf8.MaxRune
	}
}

const hexDigits = "0123456789abcdef"

// appendString appends s (valid UTF-8) as a JSON string whose text holds only characters SQS allows:
// control characters and U+FFFE/U+FFFF are written as \u escapes.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i, r := range s {
		if r < utf8.RuneSelf || allowedRune(r) {
			continue
		}
		b = jsonscan.AppendEscaped(b, s[start:i])
		b = append(b, '\\', 'u', hexDigits[r>>12&0xF], hexDigits[r>>8&0xF], hexDigits[r>>4&0xF], hexDigits[r&0xF])
		start = i + utf8.RuneLen(r)
	}
	b = jsonscan.AppendEscaped(b, s[start:])
	return append(b, '"')
}

// Field presence bits for Decode.
const (
	hasV = 1 << iota
	hasGW
	hasSeq
	hasReceivedAt
	hasType
	hasID
	hasContentFormat
	hasPeer
	hasPayload
	hasPayloadB64
	required = hasV | hasGW | hasSeq | hasReceivedAt | hasType | hasID
)

var fieldBits = map[string]int{
	"v": hasV, "gw": hasGW, "seq": hasSeq, "received_at": hasReceivedAt, "type": hasType, "id": hasID,
	"content_format": hasContentFormat, "peer": hasPeer, "payload": hasPayload, "payload_b64": hasPayloadB64,
}

// Decode parses a message body. It rejects an unknown major version with an error wrapping
// ErrVersion (whatever else the body holds) and anything else that breaks the contract (not one JSON
// object, missing or mistyped fields, duplicate keys, both or neither payload field) with an error
// wrapping ErrMalformed; it ignores fields it does not know. The record has Seq set and can be
// encoded again.
func Decode(body string) (record.Record, error) {
	var rec record.Record
	if err := decode(body, &rec); err != nil {
		return record.Record{}, err
	}
	return rec, nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

func decode(body string, rec *record.Record) error {
	if !utf8.ValidString(body) {
		return malformed("not valid UTF-8")
	}
	dec := json.NewDecoder(strings.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return malformed("not a JSON object")
	}
	var (
		seen     int
		version  uint64
		fieldErr error // the first problem with a known field; reported unless the version is unknown
	)
	rec.ContentFormat = record.NoContentFormat
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return malformed("%v", err)
		}
		key, _ := t.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return malformed("field %q: %v", key, err)
		}
		bit := fieldBits[key]
		if bit == 0 {
			continue // unknown field: ignored
		}
		if seen&bit != 0 {
			return malformed("duplicate field %q", key)
		}
		seen |= bit
		if err := decodeField(bit, key, raw, rec, &version); err != nil && fieldErr == nil {
			fieldErr = err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return malformed("%v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return malformed("data after the object")
	}
	switch {
	case version != 0 && version != Version: // whatever else is wrong: this reader cannot judge it
		return fmt.Errorf("%w %d (this reader knows %d)", ErrVersion, version, Version)
	case fieldErr != nil:
		return fieldErr
	case seen&required != required:
		return malformed("missing a required field (v, gw, seq, received_at, type, id)")
	}
	switch seen & (hasPayload | hasPayloadB64) {
	case 0:
		return malformed("no payload or payload_b64")
	case hasPayload | hasPayloadB64:
		return malformed("both payload and payload_b64")
	}
	return nil
}

// decodeField interprets the raw value of one known field.
func decodeField(bit int, key string, raw json.RawMessage, rec *record.Record, version *uint64) error {
	switch bit {
	case hasPayload:
		if raw[0] != '{' && raw[0] != '[' {
			return malformed("payload is not a JSON object or array")
		}
		rec.Payload = []byte(raw)
		return nil
	case hasV, hasContentFormat:
		u, err := strconv.ParseUint(string(raw), 10, 64)
		if err != nil {
			return malformed("field %q is not a non-negative integer", key)
		}
		if bit == hasV {
			if u == 0 {
				return malformed("version 0")
			}
			*version = u
		} else if u > 0xFFFF {
			return malformed("content_format %d out of range", u)
		} else {
			rec.ContentFormat = uint16(u)
		}
		return nil
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return malformed("field %q is not a string", key)
	}
	switch bit {
	case hasGW, hasType, hasID, hasPeer:
		if len(s) > MaxFieldBytes {
			return malformed("field %q longer than %d bytes", key, MaxFieldBytes)
		}
		if s == "" && bit != hasPeer {
			return malformed("field %q is empty", key)
		}
		switch bit {
		case hasGW:
			rec.GW = s
		case hasType:
			rec.Type = s
		case hasID:
			rec.ID = s
		default:
			rec.Peer = s
		}
	case hasSeq:
		u, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return malformed("seq %q is not a decimal number", s)
		}
		rec.Seq = u
	case hasReceivedAt:
		ts, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return malformed("received_at: %v", err)
		}
		if !time.Unix(0, ts.UnixNano()).Equal(ts) {
			return malformed("received_at %q out of range", s)
		}
		rec.ReceivedAt = ts.UTC()
	case hasPayloadB64:
		p, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil || len(s) != base64.StdEncoding.EncodedLen(len(p)) {
			return malformed("payload_b64 is not standard padded base64")
		}
		rec.Payload = p
	}
	return nil
}
