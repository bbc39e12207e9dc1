package coaptest

import (
	"fmt"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// PostBlocks sends body to path as a CON POST with Content-Format JSON, block-wise (RFC 7959
// Block1) in blocks of 2^(szx+4) bytes, each block a request of its own, and follows the
// server's request for smaller blocks in a 2.31 (late negotiation). It returns the answer to
// the last block, or the first answer that is not 2.31 Continue. extra options go in every
// block.
func (c *Client) PostBlocks(path string, body []byte, szx uint8, extra ...coapmsg.Option) (*coapmsg.Message, error) {
	off := 0
	for {
		size := 1 << (szx + 4)
		if off%size != 0 {
			return nil, fmt.Errorf("coaptest: offset %d is no multiple of block size %d", off, size)
		}
		end := min(off+size, len(body))
		more := end < len(body)
		opts := append([]coapmsg.Option{
			{Number: coapmsg.ContentFormat, Value: []byte{50}},
			{Number: coapmsg.Block1, Value: coapmsg.AppendBlock(nil, uint32(off/size), more, szx)},
		}, extra...)
		resp, err := c.Do(c.Request(coapmsg.Confirmable, coapmsg.POST, path, body[off:end], opts...))
		if err != nil || resp.Code != coapmsg.Continue || !more {
			return resp, err
		}
		if v, ok := resp.Option(coapmsg.Block1); ok {
			if _, _, s, ok := coapmsg.ParseBlock(v); ok && s < szx {
				szx = s
			}
		}
		off = end
	}
}
