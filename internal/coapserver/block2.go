package coapserver

import (
	"github.com/coapgw/coapgw/internal/coapmsg"
)

// Block-wise responses (RFC 7959 §2.4) and the block options of a response: the Block1 echoed
// to a block of a request body, and Block2 for a 2.xx payload that does not fit in one block.
//
// The server is stateless for Block2: a handler answers every request with the whole
// representation, and the endpoint sends the block the client asked for (block 0 without a
// Block2 option), of the client's block size or the server's (Options.BlockSize), whichever is
// smaller. To an unverified peer a block shrinks until the response fits within
// MaxAmplification times the request (never below 16 bytes), so a large document needs no
// Echo round trip first. A request for a block past the end of the representation gets 4.02.

// blockOpts is how many options block-wise transfer adds to a response: Block2, Block1, Size2.
const blockOpts = 3

// blockState is what an exchange's response carries for block-wise transfer; the endpoint
// fills it from the request before the handler runs.
// Its 20 bytes are in every exchange, so it is packed.
type blockState struct {
	flags      uint8 // blkEcho1, blkMore1, blkReq2, blkSize2
	szx1, szx2 uint8
	vals       [blockOpts][3]byte // the values of the block options a response carries
	num1, num2 uint32             // Block1 echoed: num1, blkMore1, szx1; Block2 asked: num2, szx2
}

const (
	blkEcho1 = 1 << iota // a 2.xx response carries Block1 (num1, blkMore1, szx1)
	blkMore1             // with M set
	blkReq2              // the request carried Block2 (num2, szx2)
	blkSize2             // the request carried Size2: a sliced response says the whole size
)

// echoBlock1 makes a 2.xx response carry Block1 (num, more, szx): the acknowledgement of a block
// of the request body (RFC 7959 §2.3).
func (w *ResponseWriter) echoBlock1(num uint32, more bool, szx uint8) {
	w.blk.flags |= blkEcho1
	if more {
		w.blk.flags |= blkMore1
	}
	w.blk.num1, w.blk.szx1 = num, szx
}

var diagBeyondEnd = []byte("block beyond the end")

// blockResponse shapes a response for block-wise transfer: o[:k] are the response's options so
// far, sorted, o has room for blockOpts more, and plen is the length of the payload the handler
// gave. It returns the code (4.02
// for a Block2 past the end), the number of options in o with the block options added, sorted,
// and the part of the payload to send: payload[off:off+n], or diag instead when off is -1. The
// block options' values are in w.blk.vals.
func (w *ResponseWriter) blockResponse(code coapmsg.Code, o []coapmsg.Option, k, plen int) (_ coapmsg.Code, _ int, off, n int, diag []byte) {
	n = plen
	if code.Class() != 2 || k > len(o)-blockOpts {
		return code, k, 0, n, nil
	}
	base := k
	if w.blk.flags&blkEcho1 != 0 {
		o[k] = coapmsg.Option{Number: coapmsg.Block1, Value: coapmsg.AppendBlock(w.blk.vals[0][:0], w.blk.num1, w.blk.flags&blkMore1 != 0, w.blk.szx1)}
		k++
	}
	szx := w.e.blockSZX
	if w.blk.flags&blkReq2 != 0 {
		szx = min(szx, w.blk.szx2)
		off = int(w.blk.num2) << (w.blk.szx2 + 4)
	}
	if plen == 0 || (off == 0 && plen <= 1<<(szx+4)) {
		// Nothing to slice: the whole payload is one block (RFC 7959 §2.4 lets the server
		// leave out Block2 then).
		sortOptions(o[:k], base)
		return code, k, 0, plen, nil
	}
	if off >= plen {
		return coapmsg.BadOption, 0, -1, 0, w.diagnostic(coapmsg.BadOption, diagBeyondEnd)
	}
	head := k // the options before Block2 and Size2, unsorted past base
	for {
		num := uint32(off >> (szx + 4))
		n = min(1<<(szx+4), plen-off)
		k = head
		o[k] = coapmsg.Option{Number: coapmsg.Block2, Value: coapmsg.AppendBlock(w.blk.vals[1][:0], num, off+n < plen, szx)}
		k++
		if w.blk.flags&blkSize2 != 0 {
			o[k] = coapmsg.Option{Number: coapmsg.Size2, Value: coapmsg.AppendUint(w.blk.vals[2][:0], uint32(plen))}
			k++
		}
		if w.verified || szx == 0 || w.encodedLen(o, k, base, n) <= MaxAmplification*w.reqSize {
			break
		}
		szx--
	}
	sortOptions(o[:k], base)
	return code, k, off, n, nil
}

// sortOptions sorts o by option number, stable, where o[:sorted] is sorted already: an
// insertion sort of the few added after it.
func sortOptions(o []coapmsg.Option, sorted int) {
	all := o
	for i := max(sorted, 1); i < len(all); i++ {
		for j := i; j > 0 && all[j].Number < all[j-1].Number; j-- {
			all[j], all[j-1] = all[j-1], all[j]
		}
	}
}

// encodedLen is the length of a piggybacked response with options o[:k], sorted up to base, and
// a payload of n bytes.
func (w *ResponseWriter) encodedLen(o []coapmsg.Option, k, base, n int) int {
	var t [maxRespOpts + blockOpts + 8]coapmsg.Option
	if k > len(t) {
		return int(^uint(0) >> 1)
	}
	copy(t[:], o[:k])
	sortOptions(t[:k], base)
	l := 4 + int(w.tkl)
	var prev uint16
	for _, op := range t[:k] {
		l += coapmsg.OptionLen(op.Number-prev, len(op.Value))
		prev = op.Number
	}
	if n > 0 {
		l += 1 + n
	}
	return l
}
