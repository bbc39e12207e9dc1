// Package coaptest is a small CoAP-over-UDP client for tests: it sends one request at a time over a
// real socket and returns the response, following an empty ACK to the separate response.
package coaptest

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// Client talks to one server from one local socket (one "device").
type Client struct {
	conn    *net.UDPConn
	server  netip.AddrPort
	mid     uint16
	Timeout time.Duration // per request, default 3 s
}

// Dial opens a socket on loopback aimed at server.
func Dial(server netip.AddrPort) (*Client, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	var b [2]byte
	_, _ = rand.Read(b[:])
	return &Client{conn: c, server: server, mid: uint16(b[0])<<8 | uint16(b[1]), Timeout: 3 * time.Second}, nil
}

// Close closes the socket.
func (c *Client) Close() error { return c.conn.Close() }

// LocalAddr is the client's address as the server sees it.
func (c *Client) LocalAddr() netip.AddrPort { return c.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// NextMID returns a fresh message ID.
func (c *Client) NextMID() uint16 { c.mid++; return c.mid }

// Request builds a request for path ("/a/b"), with a fresh MID and a 4-byte token.
func (c *Client) Request(typ coapmsg.Type, code coapmsg.Code, path string, payload []byte, opts ...coapmsg.Option) *coapmsg.Message {
	m := &coapmsg.Message{Type: typ, Code: code, MID: c.NextMID(), Payload: payload}
	tok := make([]byte, 4)
	_, _ = rand.Read(tok)
	m.Token = tok
	var all []coapmsg.Option
	for _, seg := range strings.Split(strings.Trim(path, "/"), "/") {
		if seg != "" || path == "//" {
			all = append(all, coapmsg.Option{Number: coapmsg.URIPath, Value: []byte(seg)})
		}
	}
	all = append(all, opts...)
	m.Options = SortOptions(all)
	return m
}

// SortOptions sorts options by number, stable for repeated ones.
func SortOptions(o []coapmsg.Option) []coapmsg.Option {
	for i := 1; i < len(o); i++ {
		for j := i; j > 0 && o[j].Number < o[j-1].Number; j-- {
			o[j], o[j-1] = o[j-1], o[j]
		}
	}
	return o
}

// Post sends a CON POST with a JSON payload and returns the response.
func (c *Client) Post(path, payload string) (*coapmsg.Message, error) {
	return c.Do(c.Request(coapmsg.Confirmable, coapmsg.POST, path, []byte(payload),
		coapmsg.Option{Number: coapmsg.ContentFormat, Value: []byte{50}}))
}

// Get sends a CON GET, and repeats it with the Echo value if the server answers 4.01 with one.
func (c *Client) Get(path string, query ...string) (*coapmsg.Message, error) {
	var opts []coapmsg.Option
	for _, q := range query {
		opts = append(opts, coapmsg.Option{Number: coapmsg.URIQuery, Value: []byte(q)})
	}
	resp, err := c.Do(c.Request(coapmsg.Confirmable, coapmsg.GET, path, nil, opts...))
	if err != nil {
		return resp, err
	}
	// The server verifies our address before a larger answer (RFC 9175 Echo): repeat the
	// request with the Echo value, as libcoap's client does.
	if echo, ok := resp.Option(coapmsg.Echo); ok && resp.Code == coapmsg.Unauthorized {
		opts = append(opts, coapmsg.Option{Number: coapmsg.Echo, Value: slices.Clone(echo)})
		return c.Do(c.Request(coapmsg.Confirmable, coapmsg.GET, path, nil, opts...))
	}
	return resp, nil
}

// ErrTimeout means no response came in time.
var ErrTimeout = errors.New("coaptest: no response")

// Do sends m once and waits for its response: the piggybacked ACK (matched by MID), a NON or CON
// response (matched by token; a CON response is acknowledged), or an RST.
func (c *Client) Do(m *coapmsg.Message) (*coapmsg.Message, error) {
	b, err := m.Append(nil)
	if err != nil {
		return nil, err
	}
	return c.DoRaw(b, m.MID, m.Token)
}

// DoRaw sends raw bytes and waits for a response to (mid, token) as Do does.
func (c *Client) DoRaw(b []byte, mid uint16, token []byte) (*coapmsg.Message, error) {
	if _, err := c.conn.WriteToUDPAddrPort(b, c.server); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(c.Timeout)
	buf := make([]byte, 65536)
	for {
		r, err := c.read(buf, deadline)
		if err != nil {
			return nil, err
		}
		switch {
		case r.Type == coapmsg.Reset && r.MID == mid:
			return r, nil
		case r.Type == coapmsg.Acknowledgement && r.MID == mid && r.Code == coapmsg.Empty:
			continue // separate response follows
		case r.Type == coapmsg.Acknowledgement && r.MID == mid:
			return r, nil
		case (r.Type == coapmsg.Confirmable || r.Type == coapmsg.NonConfirmable) && string(r.Token) == string(token):
			if r.Type == coapmsg.Confirmable {
				ack := []byte{0x60, 0, byte(r.MID >> 8), byte(r.MID)}
				_, _ = c.conn.WriteToUDPAddrPort(ack, c.server)
			}
			return r, nil
		}
	}
}

// Read waits for any datagram until the timeout.
func (c *Client) Read(timeout time.Duration) (*coapmsg.Message, error) {
	return c.read(make([]byte, 65536), time.Now().Add(timeout))
}

// Send writes raw bytes without waiting.
func (c *Client) Send(b []byte) error {
	_, err := c.conn.WriteToUDPAddrPort(b, c.server)
	return err
}

func (c *Client) read(buf []byte, deadline time.Time) (*coapmsg.Message, error) {
	if err := c.conn.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	n, _, err := c.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, ErrTimeout
		}
		return nil, err
	}
	r := new(coapmsg.Message)
	data := append([]byte(nil), buf[:n]...)
	if err := r.Decode(data); err != nil {
		return nil, fmt.Errorf("decode response %x: %w", data, err)
	}
	return r, nil
}
