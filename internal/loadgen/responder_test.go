package loadgen

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// respMode says how the in-test responder answers a request.
type respMode int

const (
	respPiggyback     respMode = iota // ACK 2.04 with the request's MID and token
	respDropFirst                     // ignore the first transmission of each (peer, MID), then as respPiggyback
	respSeparate                      // empty ACK, then a CON 2.04 with a new MID
	respSeparateFirst                 // the CON 2.04 overtakes the empty ACK
	respNON                           // NON 2.04 with a new MID
	respAlternate503                  // 2.04, 5.03, 4.04 in turn, by MID modulo 3
	respSilent                        // never answers
)

type peerMID struct {
	peer netip.AddrPort
	mid  uint16
}

// responder is a small CoAP server on 127.0.0.1:0 that records what it was sent.
type responder struct {
	t    *testing.T
	conn *net.UDPConn
	mode respMode
	want expect
	done chan struct{}

	mu           sync.Mutex
	requests     int
	transmits    map[peerMID]int // transmissions seen per (peer, MID)
	lastMID      map[netip.AddrPort]uint16
	midGaps      int // a peer's next new MID was not the previous one plus 1
	types        map[coapmsg.Type]int
	paths        map[string]bool
	badRequests  []string
	sepMID       uint16
	conSent      map[peerMID]bool // separate CON responses sent
	acksReceived int              // empty ACKs that acknowledged one of conSent
}

// expect is what the responder checks every first transmission against.
type expect struct {
	code coapmsg.Code
	path []string // nil: /bench/{id}, ids recorded in paths
}

func startResponder(t *testing.T, mode respMode) *responder {
	t.Helper()
	return startResponderExpect(t, mode, expect{code: coapmsg.POST})
}

func startResponderExpect(t *testing.T, mode respMode, want expect) *responder {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &responder{
		t: t, conn: conn, mode: mode, want: want, done: make(chan struct{}),
		transmits: map[peerMID]int{}, lastMID: map[netip.AddrPort]uint16{},
		types: map[coapmsg.Type]int{}, paths: map[string]bool{}, conSent: map[peerMID]bool{},
	}
	go r.serve()
	t.Cleanup(func() {
		conn.Close()
		<-r.done
	})
	return r
}

func (r *responder) addr() string { return r.conn.LocalAddr().String() }

func (r *responder) serve() {
	defer close(r.done)
	buf := make([]byte, 65536)
	var m, out coapmsg.Message
	for {
		n, peer, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if err := m.Decode(buf[:n]); err != nil {
			r.bad("undecodable datagram: %v", err)
			continue
		}
		if resp := r.answer(peer, &m, &out); resp != nil {
			for _, p := range resp {
				r.conn.WriteToUDPAddrPort(p, peer)
			}
		}
	}
}

func (r *responder) bad(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.badRequests) < 10 {
		r.badRequests = append(r.badRequests, fmt.Sprintf(format, a...))
	}
}

// answer records m and returns the datagrams to send back.
func (r *responder) answer(peer netip.AddrPort, m *coapmsg.Message, out *coapmsg.Message) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := peerMID{peer, m.MID}
	if m.Type == coapmsg.Acknowledgement {
		if m.Code == coapmsg.Empty && r.conSent[key] {
			delete(r.conSent, key)
			r.acksReceived++
		}
		return nil
	}
	r.types[m.Type]++
	r.transmits[key]++
	if r.transmits[key] == 1 {
		r.requests++
		if last, ok := r.lastMID[peer]; ok && m.MID != last+1 {
			r.midGaps++
		}
		r.lastMID[peer] = m.MID
		r.check(m)
	}
	enc := func(t coapmsg.Type, code coapmsg.Code, mid uint16, tok []byte) []byte {
		*out = coapmsg.Message{Type: t, Code: code, MID: mid, Token: tok}
		b, _ := out.Append(nil)
		return b
	}
	switch r.mode {
	case respSilent:
		return nil
	case respDropFirst:
		if r.transmits[key] == 1 {
			return nil
		}
	case respSeparate, respSeparateFirst:
		r.sepMID++
		r.conSent[peerMID{peer, r.sepMID}] = true
		ack := enc(coapmsg.Acknowledgement, coapmsg.Empty, m.MID, nil)
		con := enc(coapmsg.Confirmable, coapmsg.Changed, r.sepMID, m.Token)
		if r.mode == respSeparateFirst {
			return [][]byte{con, ack}
		}
		return [][]byte{ack, con}
	case respNON:
		r.sepMID++
		return [][]byte{enc(coapmsg.NonConfirmable, coapmsg.Changed, r.sepMID, m.Token)}
	case respAlternate503:
		code := []coapmsg.Code{coapmsg.Changed, coapmsg.ServiceUnavailable, coapmsg.NotFound}[m.MID%3]
		return [][]byte{enc(coapmsg.Acknowledgement, code, m.MID, m.Token)}
	}
	return [][]byte{enc(coapmsg.Acknowledgement, coapmsg.Changed, m.MID, m.Token)}
}

// check verifies a first transmission looks like what the load generator promises.
func (r *responder) check(m *coapmsg.Message) {
	add := func(s string) { // the first few are enough to read
		if len(r.badRequests) < 10 {
			r.badRequests = append(r.badRequests, s)
		}
	}
	if m.Code != r.want.code {
		add("code " + m.Code.String())
	}
	if len(m.Token) != 4 {
		add(fmt.Sprintf("token length %d", len(m.Token)))
	}
	var segs []string
	for _, o := range m.Options {
		if o.Number == coapmsg.URIPath {
			segs = append(segs, string(o.Value))
		}
	}
	switch {
	case r.want.path != nil:
		if !slices.Equal(segs, r.want.path) {
			add(fmt.Sprintf("path %q, want %q", segs, r.want.path))
		}
	case len(segs) != 2 || segs[0] != "bench":
		add(fmt.Sprintf("path %q", segs))
	default:
		r.paths[segs[1]] = true
	}
	if cf, ok := m.Option(coapmsg.ContentFormat); !ok || len(cf) != 1 || cf[0] != 50 {
		add(fmt.Sprintf("content-format %v %v", cf, ok))
	}
	var body struct {
		Temp float64 `json:"temp"`
		Seq  int     `json:"seq"`
		Pad  string  `json:"pad"`
	}
	if err := json.Unmarshal(m.Payload, &body); err != nil || body.Seq < 1 {
		add(fmt.Sprintf("payload %q: %v", m.Payload, err))
	}
	if len(m.Payload) != 64 {
		add(fmt.Sprintf("payload length %d", len(m.Payload)))
	}
}

// stats returns a consistent copy of the counters.
func (r *responder) stats() (requests, acksReceived, conSent int, transmits map[peerMID]int, types map[coapmsg.Type]int, paths int, midGaps int, bad []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	transmits = make(map[peerMID]int, len(r.transmits))
	for k, v := range r.transmits {
		transmits[k] = v
	}
	types = map[coapmsg.Type]int{}
	for k, v := range r.types {
		types[k] = v
	}
	return r.requests, r.acksReceived, int(r.sepMID), transmits, types, len(r.paths), r.midGaps, append([]string(nil), r.badRequests...)
}
