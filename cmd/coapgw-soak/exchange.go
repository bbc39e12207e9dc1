package main

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// timing is a client's RFC 7252 §4.2 transmission parameters.
type timing struct {
	ackTimeout    time.Duration // ACK_TIMEOUT; the first wait is up to 1.5 times it
	maxRetransmit int           // MAX_RETRANSMIT
	nonTimeout    time.Duration // a NON request's wait for its response
	separateWait  time.Duration // after an empty ACK, the wait for the separate response
}

// result is how one exchange ended.
type result struct {
	code        coapmsg.Code // the response's code; 0 when there was none
	rst         bool
	retransmits int
	separate    bool // the response came separately, after an empty ACK
}

// client is one UDP socket, connected to the gateway, making one exchange at a time.
type client struct {
	conn *net.UDPConn
	t    timing
	rng  *rand.Rand
	buf  []byte
	out  []byte
	msg  coapmsg.Message
}

func dialClient(target string, t timing, seed uint64) (*client, error) {
	raddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		return nil, err
	}
	return &client{conn: conn, t: t, rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), buf: make([]byte, 65536)}, nil
}

func (c *client) Close() error { return c.conn.Close() }

// exchange sends pkt (a request with MID mid and token token) and waits for its response: a CON
// is retransmitted with doubling timeouts, and after an empty ACK the separate response is
// awaited and, if it is a CON, acknowledged. A lost exchange has code 0. Late answers to
// earlier requests are skipped (CON ones acknowledged). The error is a socket error other than
// a timeout or a refused datagram (the gateway down): the socket was closed.
func (c *client) exchange(pkt []byte, con bool, mid uint16, token []byte) (result, error) {
	var res result
	timeout := c.t.nonTimeout
	if con {
		timeout = c.t.ackTimeout + time.Duration(c.rng.Float64()*0.5*float64(c.t.ackTimeout))
	}
	deadline := time.Now().Add(timeout)
	separate := false
	if _, err := c.conn.Write(pkt); err != nil && !refused(err) {
		return res, err
	}
	for {
		if err := c.conn.SetReadDeadline(deadline); err != nil {
			return res, err
		}
		n, err := c.conn.Read(c.buf)
		if err != nil {
			if refused(err) { // ICMP port unreachable from an earlier datagram: the gateway is down
				continue
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				return res, err
			}
			if !con || separate || res.retransmits >= c.t.maxRetransmit {
				return res, nil
			}
			res.retransmits++
			timeout *= 2
			deadline = time.Now().Add(timeout)
			if _, err := c.conn.Write(pkt); err != nil && !refused(err) {
				return res, err
			}
			continue
		}
		m := &c.msg
		if m.Decode(c.buf[:n]) != nil {
			continue
		}
		switch {
		case m.Type == coapmsg.Acknowledgement && m.MID == mid && m.Code == coapmsg.Empty:
			if !separate {
				separate = true
				deadline = time.Now().Add(c.t.separateWait)
			}
		case m.Type == coapmsg.Reset && m.MID == mid:
			res.rst = true
			return res, nil
		case m.Type == coapmsg.Acknowledgement && m.MID == mid:
			if string(m.Token) == string(token) {
				res.code = m.Code
				return res, nil
			}
		case m.Type == coapmsg.Confirmable || m.Type == coapmsg.NonConfirmable:
			if m.Type == coapmsg.Confirmable {
				c.ack(m.MID)
			}
			if m.Code.IsResponse() && string(m.Token) == string(token) {
				res.code, res.separate = m.Code, separate
				return res, nil
			}
		}
	}
}

// ack sends an empty ACK for the server's CON message mid.
func (c *client) ack(mid uint16) {
	a := coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.Empty, MID: mid}
	if b, err := a.Append(c.out[:0]); err == nil {
		c.out = b
		_, _ = c.conn.Write(b)
	}
}

// refused reports a connected UDP socket's ECONNREFUSED (an ICMP port unreachable).
func refused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
