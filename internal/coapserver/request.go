package coapserver

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// Request is one CoAP request as a handler sees it: where it came from, and a view of its options
// parsed once by the endpoint, which has already answered every request whose options it does not
// accept (see parse). Building it allocates nothing (it lives in the exchange's ResponseWriter),
// the slices it returns alias the datagram, and the whole Request is valid only until ServeCoAP
// returns. A handler that answers later (ResponseWriter.Defer) copies what it needs first.
type Request struct {
	// Peer is the address the request came from.
	Peer netip.AddrPort
	// Identity is who the transport says the peer is: the PSK identity of a DTLS session (once
	// DTLS feeds the endpoint). It is empty for plain CoAP, where nothing about the peer is
	// proven, not even its address (RequestSize, amplification.go).
	Identity string
	// Msg is the decoded message, for handlers that need raw access.
	Msg *coapmsg.Message
	// Received is when the datagram was read.
	Received time.Time

	path, query    span // Uri-Path and Uri-Query options: a run of Msg.Options (they are sorted)
	tag            span // Request-Tag options (RFC 9175)
	cf, accept     uint16
	size1          uint32
	block1, block2 Block
	has            uint8 // hasCF, hasAccept, hasBlock1, hasBlock2, hasSize1, hasSize2
	echo           []byte
}

// span is the index range [lo, hi) of one option's instances in Msg.Options.
type span struct{ lo, hi int32 }

const (
	hasCF = 1 << iota
	hasAccept
	hasBlock1
	hasBlock2
	hasSize1
	hasSize2
)

// Block is a Block1 or Block2 option value (RFC 7959 §2.2): block number, more flag, and size
// exponent, the block size being 2^(SZX+4) bytes.
type Block struct {
	Num  uint32
	More bool
	SZX  uint8
}

// Size is the block size in bytes, 16 to 1024 (SZX 7, reserved over UDP, gives 2048).
func (b Block) Size() int { return 1 << (b.SZX + 4) }

// Method is the request code (GET, POST, PUT, DELETE, …).
func (r *Request) Method() coapmsg.Code { return r.Msg.Code }

// Payload is the request body.
func (r *Request) Payload() []byte { return r.Msg.Payload }

// NumPath is the number of Uri-Path segments ("/a/b" has 2, "/" none).
func (r *Request) NumPath() int { return int(r.path.hi - r.path.lo) }

// Path is Uri-Path segment i, 0 ≤ i < NumPath.
func (r *Request) Path(i int) []byte { return r.Msg.Options[int(r.path.lo)+i].Value }

// NumQuery is the number of Uri-Query options.
func (r *Request) NumQuery() int { return int(r.query.hi - r.query.lo) }

// Query is Uri-Query option i ("name=value"), 0 ≤ i < NumQuery.
func (r *Request) Query(i int) []byte { return r.Msg.Options[int(r.query.lo)+i].Value }

// ContentFormat is the request's Content-Format; ok is false when it carried none. Content-Format
// is elective: a value longer than 2 bytes, or a second instance, is ignored (RFC 7252 §5.4.5);
// the first acceptable one counts.
func (r *Request) ContentFormat() (cf uint16, ok bool) { return r.cf, r.has&hasCF != 0 }

// Accept is the content format the client wants; ok is false when it did not say.
func (r *Request) Accept() (cf uint16, ok bool) { return r.accept, r.has&hasAccept != 0 }

// Echo is the value of the request's Echo option (RFC 9175), nil without one; of several, the
// last.
func (r *Request) Echo() []byte { return r.echo }

// Block1 is the request's Block1 option (RFC 7959); ok is false without one. Requests with Block1
// or Block2 are accepted only with Options.BlockWise, and the endpoint reassembles a Block1 body
// itself: a handler sees one request with the whole body, and Block1 the last block's option.
func (r *Request) Block1() (b Block, ok bool) { return r.block1, r.has&hasBlock1 != 0 }

// Size1 is the request's Size1 option (RFC 7959 §4): the size of the whole request body, as the
// client announces it; ok is false without one (or with one longer than 4 bytes, ignored).
func (r *Request) Size1() (n uint32, ok bool) { return r.size1, r.has&hasSize1 != 0 }

// Block2 is the request's Block2 option (RFC 7959); ok is false without one. See Block1.
func (r *Request) Block2() (b Block, ok bool) { return r.block2, r.has&hasBlock2 != 0 }

// parse fills the view from msg, whose options are sorted (Decode keeps them in wire order,
// ascending), and checks the options that are the exchange layer's business, in option order, so
// that the first offending option decides the answer:
//
//   - Proxy-Uri, Proxy-Scheme: the gateway is no proxy, 5.05 (RFC 7252 §5.10.2);
//   - an unrecognised critical option (odd number), or a recognised critical one repeated or of
//     illegal length (Uri-Host 1–255 bytes, Uri-Port and Accept 0–2, Block1/Block2 0–3) is
//     treated as unrecognised: 4.02 (§5.4.1, §5.4.3, §5.4.5). Block1 and Block2 are recognised
//     only with blockWise; without it they get 4.02 as any unknown critical option does;
//   - Size1, Size2 (RFC 7959 §4) and Request-Tag (RFC 9175) are elective: read for block-wise
//     transfer, never refused;
//   - an unrecognised elective option is ignored (§5.4.1).
//
// code is 0 when the request may go to the handler; otherwise the answer, with num the option at
// fault for 4.02.
func (r *Request) parse(msg *coapmsg.Message, blockWise bool) (code coapmsg.Code, num uint16) {
	r.Msg = msg
	r.path, r.query, r.tag = span{}, span{}, span{}
	r.has, r.echo = 0, nil
	var hostSeen, portSeen bool
	for i, o := range msg.Options {
		switch o.Number {
		case coapmsg.URIPath:
			if r.path.hi == 0 {
				r.path.lo = int32(i)
			}
			r.path.hi = int32(i) + 1
		case coapmsg.URIQuery:
			if r.query.hi == 0 {
				r.query.lo = int32(i)
			}
			r.query.hi = int32(i) + 1
		case coapmsg.ContentFormat:
			if len(o.Value) <= 2 && r.has&hasCF == 0 {
				v, _ := coapmsg.Uint(o.Value)
				r.cf, r.has = uint16(v), r.has|hasCF
			}
		case coapmsg.URIHost:
			if hostSeen || len(o.Value) == 0 || len(o.Value) > 255 {
				return coapmsg.BadOption, o.Number
			}
			hostSeen = true
		case coapmsg.URIPort:
			if portSeen || len(o.Value) > 2 {
				return coapmsg.BadOption, o.Number
			}
			portSeen = true
		case coapmsg.Accept:
			if r.has&hasAccept != 0 || len(o.Value) > 2 {
				return coapmsg.BadOption, o.Number
			}
			v, _ := coapmsg.Uint(o.Value)
			r.accept, r.has = uint16(v), r.has|hasAccept
		case coapmsg.Echo:
			r.echo = o.Value
		case coapmsg.Size1:
			if v, ok := coapmsg.Uint(o.Value); ok {
				r.size1, r.has = v, r.has|hasSize1
			}
		case coapmsg.Size2:
			r.has |= hasSize2
		case coapmsg.RequestTag:
			if r.tag.hi == 0 {
				r.tag.lo = int32(i)
			}
			r.tag.hi = int32(i) + 1
		case coapmsg.ProxyURI, coapmsg.ProxyScheme:
			return coapmsg.ProxyingNotSupported, o.Number
		case coapmsg.Block1, coapmsg.Block2:
			bit := uint8(hasBlock2)
			dst := &r.block2
			if o.Number == coapmsg.Block1 {
				bit, dst = hasBlock1, &r.block1
			}
			if !blockWise || r.has&bit != 0 || len(o.Value) > 3 {
				return coapmsg.BadOption, o.Number
			}
			v, _ := coapmsg.Uint(o.Value)
			*dst = Block{Num: v >> 4, More: v&0x8 != 0, SZX: uint8(v & 0x7)}
			r.has |= bit
		default:
			if coapmsg.Critical(o.Number) {
				return coapmsg.BadOption, o.Number
			}
		}
	}
	return 0, 0
}

// rejectOptions answers a request parse refused, before any handler sees it: 5.05 for a proxy
// request; 4.02 with a diagnostic naming the option for a CON, and for a NON nothing, as a NON
// with an unrecognised critical option is rejected, that is silently ignored (RFC 7252 §5.4.1,
// §4.3). A Handler that is a RejectObserver hears of it first.
func (e *Endpoint) rejectOptions(w *ResponseWriter, r *Request, code coapmsg.Code, num uint16) {
	if e.obs != nil {
		e.obs.Rejected(r, code)
	}
	if code != coapmsg.BadOption {
		w.Respond(code, nil)
		return
	}
	if !w.con {
		w.Drop()
		return
	}
	var b [40]byte
	w.Respond(coapmsg.BadOption, w.Diagnostic(strconv.AppendUint(append(b[:0], "unsupported critical option "...), uint64(num), 10)))
}

// RejectObserver is an optional interface of the Handler an Endpoint serves: Rejected is called
// for every request the endpoint answers itself because of its options (4.02, 5.05, or nothing
// for a NON; see Request), before the answer goes out, so that the handler can count it. r is
// valid only during the call; the options after the offending one are not parsed.
type RejectObserver interface {
	Rejected(r *Request, code coapmsg.Code)
}
