package coapserver

import (
	"github.com/coapgw/coapgw/internal/coapmsg"
)

// serveBlockWise takes a request with a Block1 or Block2 option (only with Options.BlockWise):
// it notes what the response must carry (block2.go) and reassembles a Block1 body (block1.go)
// before the handler sees the request.
func (e *Endpoint) serveBlockWise(w *ResponseWriter, r *Request) {
	if r.has&hasSize2 != 0 {
		w.blk.flags |= blkSize2
	}
	if b, ok := r.Block2(); ok {
		if b.SZX == 7 {
			e.blockReject(w, r, outBadBlock, coapmsg.BadRequest, "block size exponent 7 is reserved")
			return
		}
		w.blk.flags |= blkReq2
		w.blk.num2, w.blk.szx2 = b.Num, b.SZX
	}
	b, ok := r.Block1()
	if !ok {
		e.h.ServeCoAP(w, r)
		return
	}
	p := r.Payload()
	switch m := r.Method(); {
	case m == coapmsg.GET || m == coapmsg.DELETE:
		// RFC 7959 §2.3: Block1 describes a request body, which these methods do not take; a
		// critical option the request cannot use rejects it.
		e.blockReject(w, r, outBadBlock, coapmsg.BadOption, "Block1 in a request without a body")
		return
	case b.SZX == 7:
		e.blockReject(w, r, outBadBlock, coapmsg.BadRequest, "block size exponent 7 is reserved")
		return
	case b.More && len(p) != b.Size(), !b.More && len(p) > b.Size():
		e.blockReject(w, r, outBadBlock, coapmsg.BadRequest, "block payload does not match its size")
		return
	}
	k := bodyKeyOf(w.key.peer, r)
	maxBody := e.bodies.maxBody
	off := int(b.Num) << (b.SZX + 4)
	size1, hasSize1 := r.Size1()
	// The block size the endpoint asks for: the client's, or a smaller one of its own (§2.5).
	szx := min(b.SZX, e.blockSZX)
	if (hasSize1 && int64(size1) > int64(maxBody)) || off+len(p) > maxBody {
		// 4.13 with Size1, the most the endpoint takes, and Block1, the block size it takes
		// (RFC 7959 §2.9.3, §4).
		e.bodies.drop(k)
		w.SetUintOption(coapmsg.Block1, coapmsg.BlockValue(b.Num, false, szx))
		w.SetUintOption(coapmsg.Size1, uint32(maxBody))
		e.blockReject(w, r, outTooLarge, coapmsg.RequestEntityTooLarge, "request body too large")
		return
	}
	if b.Num == 0 && !b.More {
		// The whole body in one block: nothing to reassemble.
		e.bodies.drop(k)
		w.echoBlock1(0, false, szx)
		e.h.ServeCoAP(w, r)
		return
	}
	res, whole := e.bodies.put(k, b.Num, b.More, off, p, int(size1), int64(r.Received.Sub(e.epoch)))
	switch res {
	case putMore:
		e.m.block1Out[outContinued].Inc()
		w.echoBlock1(b.Num, true, szx)
		w.Respond(coapmsg.Continue, nil)
	case putDone:
		e.m.block1Out[outCompleted].Inc()
		msg := r.Msg
		msg.Payload = whole
		w.echoBlock1(b.Num, false, szx)
		e.h.ServeCoAP(w, r)
		msg.Payload = nil // the message goes back to a pool: let the body go now
	case putIncomplete:
		e.blockReject(w, r, outIncomplete, coapmsg.RequestEntityIncomplete, "blocks missing before this one")
	case putFull:
		w.SetUintOption(coapmsg.MaxAge, uint32(max(1, e.opts.RetryAfter.Seconds())))
		e.blockReject(w, r, outFull, coapmsg.ServiceUnavailable, "too many request bodies in reassembly")
	}
}

// blockReject answers a request the block-wise layer refuses, with code and a diagnostic (if it
// keeps within MaxAmplification), counts it by outcome and tells a RejectObserver. A NON gets
// its answer too: RFC 7959 leaves no other way to stop the transfer.
func (e *Endpoint) blockReject(w *ResponseWriter, r *Request, out blockOutcome, code coapmsg.Code, diag string) {
	e.m.block1Out[out].Inc()
	if e.obs != nil {
		e.obs.Rejected(r, code)
	}
	w.Respond(code, w.Diagnostic([]byte(diag)))
}

// BlockBodies is the number of Block1 request bodies in reassembly and the bytes they are
// counted for (at most Options.BlockMaxBytes).
func (e *Endpoint) BlockBodies() (bodies, bytes int) {
	if e.bodies == nil {
		return 0, 0
	}
	return e.bodies.len()
}
