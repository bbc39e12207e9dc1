package coapserver

import "github.com/coapgw/coapgw/internal/coapmsg"

// Attach sets a payload, of Content-Format cf, that the exchange's answer carries if it is a
// 2.xx that Respond is given without a payload of its own; an error answer never carries it. The
// device API attaches a thing's pending desired-state change (the delta) this way before it
// stores the record, so that the 2.04 sent once the record is durable carries it, and a 5.03
// does not. payload is kept, not copied: it must not change afterwards.
//
// The attachment is left out, and the answer goes bare, when carrying it would
//   - make the answer longer than a block (a POST's answer cannot be fetched block by block:
//     its Block2 continuation would repeat the request), or go with a Block1 body's last block;
//   - to an unverified peer (no DTLS identity, no PeerVerified): break the amplification bound,
//     that is, for a piggybacked answer be longer than MaxAmplification times the request, and
//     for a separate one go out fewer times than the bare answer would (see sendSeparate).
//
// Each answer sent without its attachment is counted in coapgw_coap_attachments_dropped_total.
func (w *ResponseWriter) Attach(payload []byte, cf uint16) {
	w.att, w.attCF = payload, cf
}

// attachment returns the attached payload for an answer of code, or nil (see Attach); when it
// returns one, it has set its Content-Format option.
func (w *ResponseWriter) attachment(code coapmsg.Code, separate bool) []byte {
	if w.att == nil || code.Class() != 2 {
		return nil
	}
	e := w.e
	var v [2]byte
	cfOpt := coapmsg.Option{Number: coapmsg.ContentFormat, Value: coapmsg.AppendUint(v[:0], uint32(w.attCF))}
	ok := w.blk.flags == 0 && len(w.att) <= e.sliceAbove
	if ok && !w.verified {
		with, bare := w.size(code, len(w.att), cfOpt), w.size(code, 0)
		if separate {
			budget := MaxAmplification*w.reqSize - emptyAckLen
			want := min(budget/bare, 1+e.opts.MaxRetransmit)
			ok = budget/with >= want
		} else {
			ok = with <= MaxAmplification*w.reqSize
		}
	}
	if !ok {
		e.m.attachmentsDropped.Inc()
		return nil
	}
	w.SetUintOption(coapmsg.ContentFormat, uint32(w.attCF))
	return w.att
}
