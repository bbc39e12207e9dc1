package coapclient

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// RFC 7252 §4.8 transmission parameters.
const (
	AckTimeout      = 2 * time.Second
	AckRandomFactor = 1.5
	MaxRetransmit   = 4
)

// exchangeLifetime is RFC 7252's EXCHANGE_LIFETIME, the longest a separate response is awaited.
const exchangeLifetime = 247 * time.Second

// Request is one request. Path holds the Uri-Path segments; Options are further options, in
// any order (Do sorts them with the others).
type Request struct {
	NON           bool // send it once as a NON instead of as a CON
	Code          coapmsg.Code
	Path          []string
	ContentFormat int // -1: no Content-Format option
	Options       []coapmsg.Option
	Payload       []byte
}

// Params are the transmission parameters; the zero value means RFC 7252's defaults.
type Params struct {
	AckTimeout      time.Duration // first wait for an ACK (randomised up to AckRandomFactor times it)
	AckRandomFactor float64
	MaxRetransmit   int           // retransmissions of a CON before giving up
	NONTimeout      time.Duration // how long to wait for the response to a NON (default AckTimeout)
}

func (p Params) withDefaults() Params {
	if p.AckTimeout <= 0 {
		p.AckTimeout = AckTimeout
	}
	if p.AckRandomFactor < 1 {
		p.AckRandomFactor = AckRandomFactor
	}
	if p.MaxRetransmit <= 0 {
		p.MaxRetransmit = MaxRetransmit
	}
	if p.NONTimeout <= 0 {
		p.NONTimeout = p.AckTimeout
	}
	return p
}

// ErrReset is returned when the server answered the request with RST.
var ErrReset = errors.New("server answered RST")

// ErrTimeout is returned (wrapped) when no response came: a CON not acknowledged after its last
// retransmission, a NON without a response within Params.NONTimeout, or ctx's deadline.
var ErrTimeout = errors.New("no answer")

// Do sends req on conn (connected to the server: a dialled UDP socket or a DTLS session) and
// returns the response. A 4.01 with an Echo option is followed, once, by the same request
// carrying that Echo value; the second response is returned.
func Do(ctx context.Context, conn net.Conn, req Request, p Params) (*coapmsg.Message, error) {
	p = p.withDefaults()
	resp, err := exchange(ctx, conn, req, p)
	if err != nil {
		return nil, err
	}
	if echo, ok := resp.Option(coapmsg.Echo); ok && resp.Code == coapmsg.Unauthorized {
		req.Options = append(append([]coapmsg.Option(nil), req.Options...), coapmsg.Option{Number: coapmsg.Echo, Value: echo})
		return exchange(ctx, conn, req, p)
	}
	return resp, nil
}

// Encode builds the wire form of req with mid and token.
func Encode(req Request, mid uint16, token []byte) ([]byte, error) {
	opts := make([]coapmsg.Option, 0, len(req.Path)+len(req.Options)+1)
	for _, s := range req.Path {
		opts = append(opts, coapmsg.Option{Number: coapmsg.URIPath, Value: []byte(s)})
	}
	if req.ContentFormat >= 0 {
		opts = append(opts, coapmsg.Option{Number: coapmsg.ContentFormat, Value: coapmsg.AppendUint(nil, uint32(req.ContentFormat))})
	}
	opts = append(opts, req.Options...)
	// A stable insertion sort: Uri-Path segments keep their order.
	for i := 1; i < len(opts); i++ {
		for j := i; j > 0 && opts[j].Number < opts[j-1].Number; j-- {
			opts[j], opts[j-1] = opts[j-1], opts[j]
		}
	}
	t := coapmsg.Confirmable
	if req.NON {
		t = coapmsg.NonConfirmable
	}
	m := coapmsg.Message{Type: t, Code: req.Code, MID: mid, Token: token, Options: opts, Payload: req.Payload}
	return m.Append(nil)
}

// exchange is one request and its response, with a fresh MID and token.
func exchange(ctx context.Context, conn net.Conn, req Request, p Params) (*coapmsg.Message, error) {
	var rnd [10]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	mid, token := binary.BigEndian.Uint16(rnd[:2]), rnd[2:]
	wire, err := Encode(req, mid, token)
	if err != nil {
		return nil, err
	}
	defer conn.SetReadDeadline(time.Time{})
	deadline, hasDeadline := ctx.Deadline()
	if stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) }); stop != nil {
		defer stop()
	}

	// The waits between transmissions: RFC 7252 §4.2, a random first timeout in
	// [ACK_TIMEOUT, ACK_TIMEOUT*ACK_RANDOM_FACTOR], doubled for each retransmission; a NON is
	// sent once and waited for NONTimeout.
	waits := []time.Duration{p.NONTimeout}
	if !req.NON {
		waits = waits[:0]
		w := p.AckTimeout + randDuration(time.Duration(float64(p.AckTimeout)*(p.AckRandomFactor-1)))
		for i := 0; i <= p.MaxRetransmit; i++ {
			waits = append(waits, w)
			w *= 2
		}
	}
	buf := make([]byte, 64<<10)
	acked := false // an empty ACK came
	setDeadline := func(d time.Duration) error {
		until := time.Now().Add(d)
		if hasDeadline && until.After(deadline) {
			until = deadline
		}
		return conn.SetReadDeadline(until)
	}
	for i := 0; i < len(waits); i++ {
		if _, err := conn.Write(wire); err != nil {
			return nil, err
		}
		if err := setDeadline(waits[i]); err != nil {
			return nil, err
		}
		for {
			n, err := conn.Read(buf)
			if err != nil {
				var ne net.Error
				if ctx.Err() != nil {
					return nil, fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
				}
				if errors.As(err, &ne) && ne.Timeout() {
					if acked {
						return nil, fmt.Errorf("%w: the separate response did not come", ErrTimeout)
					}
					break
				}
				return nil, err
			}
			m := &coapmsg.Message{}
			if m.Decode(buf[:n]) != nil {
				continue
			}
			switch {
			case m.Type == coapmsg.Reset && m.MID == mid:
				return nil, ErrReset
			case m.Type == coapmsg.Acknowledgement && m.MID == mid && m.Code == coapmsg.Empty:
				// The separate response follows: no more retransmissions. RFC 7252 sets no
				// bound on its delay; wait until ctx's deadline, at most EXCHANGE_LIFETIME.
				acked = true
				if err := setDeadline(exchangeLifetime); err != nil {
					return nil, err
				}
				continue
			case string(m.Token) != string(token) || !m.Code.IsResponse():
				continue
			}
			if m.Type == coapmsg.Confirmable { // a separate response: acknowledge it
				ack := coapmsg.Message{Type: coapmsg.Acknowledgement, Code: coapmsg.Empty, MID: m.MID}
				if b, err := ack.Append(nil); err == nil {
					_, _ = conn.Write(b)
				}
			}
			// Detach the message from buf.
			m.Payload = append([]byte(nil), m.Payload...)
			for j := range m.Options {
				m.Options[j].Value = append([]byte(nil), m.Options[j].Value...)
			}
			return m, nil
		}
	}
	if req.NON {
		return nil, fmt.Errorf("%w to the NON within %v", ErrTimeout, p.NONTimeout)
	}
	return nil, fmt.Errorf("%w after %d transmissions", ErrTimeout, len(waits))
}

func randDuration(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	n, err := rand.Int(rand.Reader, big.NewInt(int64(max)))
	if err != nil {
		return 0
	}
	return time.Duration(n.Int64())
}

// SplitPath turns "/sensor/dev-1" into its Uri-Path segments.
func SplitPath(path string) []string {
	path = strings.Trim(path, "/")
	if path == "" {
		return nil
	}
	return strings.Split(path, "/")
}
