// Package coapmsg encodes and decodes CoAP messages (RFC 7252 §3) without allocating.
//
// Decode keeps slices into the datagram it was given; a Message is meant to be reused by one
// goroutine for many datagrams. Every malformed shape RFC 7252 §3 names is reported as a
// *FormatError, so a server can answer a CON with RST and drop a NON, and a decoder never
// allocates in proportion to a length claimed by the datagram. A message may carry at most
// MaxOptions options: Decode stops at the first one past it (ErrTooManyOptions), so the work per
// datagram does not grow with the number of options it packs.
package coapmsg

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Type is the CoAP message type (RFC 7252 §3).
type Type uint8

// Message types.
const (
	Confirmable     Type = 0
	NonConfirmable  Type = 1
	Acknowledgement Type = 2
	Reset           Type = 3
)

func (t Type) String() string {
	switch t {
	case Confirmable:
		return "CON"
	case NonConfirmable:
		return "NON"
	case Acknowledgement:
		return "ACK"
	case Reset:
		return "RST"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Code is a CoAP code, class in the top 3 bits and detail in the low 5 (c.dd).
type Code uint8

// MakeCode builds the code class.detail.
func MakeCode(class, detail uint8) Code { return Code(class<<5 | detail&0x1f) }

// Class is the code class (0 request, 2 success, 4 client error, 5 server error).
func (c Code) Class() uint8 { return uint8(c) >> 5 }

// Detail is the code detail.
func (c Code) Detail() uint8 { return uint8(c) & 0x1f }

func (c Code) String() string { return fmt.Sprintf("%d.%02d", c.Class(), c.Detail()) }

// Request methods and the response codes coapgw uses.
const (
	Empty  Code = 0        // 0.00
	GET    Code = 0<<5 | 1 // 0.01
	POST   Code = 0<<5 | 2 // 0.02
	PUT    Code = 0<<5 | 3 // 0.03
	DELETE Code = 0<<5 | 4 // 0.04

	Created               Code = 2<<5 | 1  // 2.01
	Deleted               Code = 2<<5 | 2  // 2.02
	Valid                 Code = 2<<5 | 3  // 2.03
	Changed               Code = 2<<5 | 4  // 2.04
	Content               Code = 2<<5 | 5  // 2.05
	BadRequest            Code = 4 << 5    // 4.00
	Unauthorized          Code = 4<<5 | 1  // 4.01
	BadOption             Code = 4<<5 | 2  // 4.02
	Forbidden             Code = 4<<5 | 3  // 4.03
	NotFound              Code = 4<<5 | 4  // 4.04
	MethodNotAllowed      Code = 4<<5 | 5  // 4.05
	NotAcceptable         Code = 4<<5 | 6  // 4.06
	RequestEntityTooLarge Code = 4<<5 | 13 // 4.13
	UnsupportedFormat     Code = 4<<5 | 15 // 4.15
	InternalServerError   Code = 5 << 5    // 5.00
	NotImplemented        Code = 5<<5 | 1  // 5.01
	ServiceUnavailable    Code = 5<<5 | 3  // 5.03
	ProxyingNotSupported  Code = 5<<5 | 5  // 5.05
)

// IsRequest reports whether c is a method code (0.01–0.31).
func (c Code) IsRequest() bool { return c.Class() == 0 && c != Empty }

// IsResponse reports whether c is a response code (2.xx, 4.xx, 5.xx).
func (c Code) IsResponse() bool { cl := c.Class(); return cl == 2 || cl == 4 || cl == 5 }

// Option numbers from RFC 7252 §5.10, RFC 7641, RFC 7959.
const (
	IfMatch       uint16 = 1
	URIHost       uint16 = 3
	ETag          uint16 = 4
	IfNoneMatch   uint16 = 5
	Observe       uint16 = 6
	URIPort       uint16 = 7
	LocationPath  uint16 = 8
	URIPath       uint16 = 11
	ContentFormat uint16 = 12
	MaxAge        uint16 = 14
	URIQuery      uint16 = 15
	Accept        uint16 = 17
	LocationQuery uint16 = 20
	Block2        uint16 = 23
	Block1        uint16 = 27
	Size2         uint16 = 28
	ProxyURI      uint16 = 35
	ProxyScheme   uint16 = 39
	Size1         uint16 = 60
	Echo          uint16 = 252 // RFC 9175
)

// Critical reports whether an option number is critical (odd, RFC 7252 §5.4.1).
func Critical(num uint16) bool { return num&1 == 1 }

// Content formats used by coapgw.
const (
	FormatLinkFormat uint16 = 40
	FormatJSON       uint16 = 50
	FormatCBOR       uint16 = 60
)

// MaxTokenLen is the longest token RFC 7252 allows.
const MaxTokenLen = 8

// MaxOptions is the most options Decode takes in one message. RFC 7252 sets no limit, but real
// requests carry fewer than 20 (a Uri-Path per segment, a few Uri-Query, Content-Format, Accept,
// Block, Echo); a datagram packing thousands of empty options is an attack on the CPU, not a
// request.
const MaxOptions = 64

// Option is one option instance; Value aliases the decoded datagram.
type Option struct {
	Number uint16
	Value  []byte
}

// Message is a decoded or to-be-encoded CoAP message.
type Message struct {
	Type    Type
	Code    Code
	MID     uint16
	Token   []byte
	Options []Option // sorted by Number when decoded; Append sorts nothing, add them in order
	Payload []byte

	optBuf [16]Option
}

// Errors returned by Decode.
var (
	// ErrShort: fewer than 4 bytes; there is no MID to answer, so the datagram is dropped.
	ErrShort = errors.New("datagram shorter than the 4-byte header")
	// ErrVersion: version is not 1; RFC 7252 §3 says to silently ignore it.
	ErrVersion = errors.New("unknown CoAP version")
	// ErrTooManyOptions: the message carries more than MaxOptions options. It is no format error
	// (RFC 7252 sets no limit), but a limit of this implementation: Decode stops at the option past
	// MaxOptions, leaving Type, Code, MID and Token set and the first MaxOptions options in
	// Options, so that a server can answer the request (package coapserver answers a CON 4.00).
	ErrTooManyOptions = errors.New("more than 64 options")
)

// FormatError is a message format error with a parseable header (RFC 7252 §4.2/§4.3):
// a CON gets RST, a NON is dropped.
type FormatError struct{ Reason string }

func (e *FormatError) Error() string { return "message format error: " + e.Reason }

// The format errors Decode returns are allocated once, so that rejecting a malformed datagram
// allocates nothing either (a flood of garbage must not cost the server garbage collection).
var (
	errTokenLen       = &FormatError{Reason: "token length over 8"}
	errEmptyNotEmpty  = &FormatError{Reason: "empty message with token, options or payload"}
	errTokenPast      = &FormatError{Reason: "token runs past the datagram"}
	errEmptyPayload   = &FormatError{Reason: "payload marker with empty payload"}
	errOptionNumber   = &FormatError{Reason: "option number over 65535"}
	errValuePast      = &FormatError{Reason: "option value runs past the datagram"}
	errDeltaTruncated = &FormatError{Reason: "truncated extended option delta"}
	errLenTruncated   = &FormatError{Reason: "truncated extended option length"}
	errDeltaReserved  = &FormatError{Reason: "reserved option delta nibble 15"}
	errLenReserved    = &FormatError{Reason: "reserved option length nibble 15"}
)

// Header decodes only the fixed header; ok is false when the datagram is shorter than 4 bytes
// or not version 1. It lets a server send RST for a CON it cannot otherwise parse.
func Header(data []byte) (t Type, code Code, mid uint16, ok bool) {
	if len(data) < 4 || data[0]>>6 != 1 {
		return 0, 0, 0, false
	}
	return Type(data[0] >> 4 & 3), Code(data[1]), binary.BigEndian.Uint16(data[2:4]), true
}

// Decode parses data into m, reusing m's option storage. Slices in m alias data.
func (m *Message) Decode(data []byte) error {
	if len(data) < 4 {
		return ErrShort
	}
	if data[0]>>6 != 1 {
		return ErrVersion
	}
	m.Type = Type(data[0] >> 4 & 3)
	tkl := int(data[0] & 0x0f)
	m.Code = Code(data[1])
	m.MID = binary.BigEndian.Uint16(data[2:4])
	m.Token, m.Payload = nil, nil
	if m.Options == nil || cap(m.Options) > MaxOptions {
		// Start from the inline array; Decode grows it to MaxOptions at most, and a Message whose
		// Options were set bigger for encoding drops that storage.
		m.Options = m.optBuf[:0]
	}
	m.Options = m.Options[:0]
	if tkl > MaxTokenLen {
		return errTokenLen
	}
	if m.Code == Empty {
		if tkl != 0 || len(data) != 4 {
			return errEmptyNotEmpty
		}
		return nil
	}
	if len(data) < 4+tkl {
		return errTokenPast
	}
	if tkl > 0 {
		m.Token = data[4 : 4+tkl]
	}
	p := data[4+tkl:]
	var num uint32
	for len(p) > 0 {
		if p[0] == 0xff {
			if len(p) == 1 {
				return errEmptyPayload
			}
			m.Payload = p[1:]
			return nil
		}
		delta, length := uint32(p[0]>>4), uint32(p[0]&0x0f)
		p = p[1:]
		var err error
		if delta, p, err = extended(delta, p, errDeltaTruncated, errDeltaReserved); err != nil {
			return err
		}
		if length, p, err = extended(length, p, errLenTruncated, errLenReserved); err != nil {
			return err
		}
		num += delta
		if num > 0xffff {
			return errOptionNumber
		}
		if uint32(len(p)) < length {
			return errValuePast
		}
		switch len(m.Options) {
		case MaxOptions:
			return ErrTooManyOptions
		case cap(m.Options):
			// Past the inline array: grow once, to the most a message may carry.
			m.Options = append(make([]Option, 0, MaxOptions), m.Options...)
		}
		m.Options = append(m.Options, Option{Number: uint16(num), Value: p[:length:length]})
		p = p[length:]
	}
	return nil
}

func extended(v uint32, p []byte, truncated, reserved error) (uint32, []byte, error) {
	switch v {
	case 13:
		if len(p) < 1 {
			return 0, nil, truncated
		}
		return uint32(p[0]) + 13, p[1:], nil
	case 14:
		if len(p) < 2 {
			return 0, nil, truncated
		}
		return uint32(binary.BigEndian.Uint16(p)) + 269, p[2:], nil
	case 15:
		return 0, nil, reserved
	}
	return v, p, nil
}

// Option returns the first value of option num.
func (m *Message) Option(num uint16) (val []byte, ok bool) {
	for _, o := range m.Options {
		if o.Number == num {
			return o.Value, true
		}
		if o.Number > num {
			break
		}
	}
	return nil, false
}

// Count returns how many times option num occurs.
func (m *Message) Count(num uint16) int {
	n := 0
	for _, o := range m.Options {
		if o.Number == num {
			n++
		}
	}
	return n
}

// maxOptionLen is the longest option value the option format can express (RFC 7252 §3.1:
// 14 in the length nibble, then a 16-bit extended length plus 269).
const maxOptionLen = 0xffff + 269

// Append encodes m onto b. Options must be in ascending Number order. On error, b is returned
// with its original length (nothing of m is left appended).
func (m *Message) Append(b []byte) ([]byte, error) {
	if len(m.Token) > MaxTokenLen {
		return b, errors.New("token longer than 8 bytes")
	}
	if m.Type > Reset {
		return b, fmt.Errorf("invalid message type %d", uint8(m.Type))
	}
	n := len(b)
	b = append(b, 1<<6|byte(m.Type)<<4|byte(len(m.Token)), byte(m.Code), byte(m.MID>>8), byte(m.MID))
	b = append(b, m.Token...)
	var prev uint16
	for _, o := range m.Options {
		if o.Number < prev {
			return b[:n], fmt.Errorf("option %d after option %d", o.Number, prev)
		}
		if len(o.Value) > maxOptionLen {
			return b[:n], fmt.Errorf("option %d value of %d bytes is longer than %d", o.Number, len(o.Value), maxOptionLen)
		}
		b = AppendOption(b, o.Number-prev, o.Value)
		prev = o.Number
	}
	if len(m.Payload) > 0 {
		b = append(b, 0xff)
		b = append(b, m.Payload...)
	}
	return b, nil
}

// AppendOption encodes one option with the given delta from the previous option number.
// len(val) must not exceed maxOptionLen (Append checks this; AppendOption cannot report it).
func AppendOption(b []byte, delta uint16, val []byte) []byte {
	dn, dx := nibble(uint32(delta))
	ln, lx := nibble(uint32(len(val)))
	b = append(b, dn<<4|ln)
	b = appendExt(b, dn, dx)
	b = appendExt(b, ln, lx)
	return append(b, val...)
}

// OptionLen is the length of an option encoded with AppendOption: its header, extended delta
// and length, and value.
func OptionLen(delta uint16, valLen int) int {
	dn, _ := nibble(uint32(delta))
	ln, _ := nibble(uint32(valLen))
	return 1 + extFieldLen(dn) + extFieldLen(ln) + valLen
}

// extFieldLen is the length of the extended field a nibble of 13 or 14 announces (RFC 7252 §3.1).
func extFieldLen(n byte) int {
	switch n {
	case 13:
		return 1
	case 14:
		return 2
	}
	return 0
}

func nibble(v uint32) (byte, uint32) {
	switch {
	case v < 13:
		return byte(v), 0
	case v < 269:
		return 13, v - 13
	default:
		return 14, v - 269
	}
}

func appendExt(b []byte, n byte, x uint32) []byte {
	switch n {
	case 13:
		return append(b, byte(x))
	case 14:
		return append(b, byte(x>>8), byte(x))
	}
	return b
}

// AppendUint appends the minimal big-endian encoding of v (RFC 7252 §3.2 uint), for option values.
func AppendUint(b []byte, v uint32) []byte {
	switch {
	case v == 0:
		return b
	case v < 1<<8:
		return append(b, byte(v))
	case v < 1<<16:
		return append(b, byte(v>>8), byte(v))
	case v < 1<<24:
		return append(b, byte(v>>16), byte(v>>8), byte(v))
	}
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// Uint decodes a uint option value of up to 4 bytes; ok is false if longer.
func Uint(val []byte) (v uint32, ok bool) {
	if len(val) > 4 {
		return 0, false
	}
	for _, c := range val {
		v = v<<8 | uint32(c)
	}
	return v, true
}
