package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// hostileKinds are the hostile datagrams, each built by its function from a random source.
// None may ever be stored: they are malformed, refused by the device API, or not telemetry.
var hostileKinds = []struct {
	name  string
	build func(r *rand.Rand, mid uint16) []byte
}{
	{"garbage", func(r *rand.Rand, _ uint16) []byte {
		b := make([]byte, 1+r.IntN(64))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}},
	{"short_header", func(r *rand.Rand, _ uint16) []byte { return []byte{0x40, 0x02} }},
	{"version_2", func(r *rand.Rand, mid uint16) []byte { return []byte{0x80, 0x02, byte(mid >> 8), byte(mid)} }},
	{"token_len_9", func(r *rand.Rand, mid uint16) []byte {
		return []byte{0x49, 0x02, byte(mid >> 8), byte(mid), 1, 2, 3, 4, 5, 6, 7, 8, 9}
	}},
	{"invalid_json", func(r *rand.Rand, mid uint16) []byte {
		return request(coapmsg.Confirmable, mid, []string{"soak", "hostile"}, 50, []byte(`{"n":1,`))
	}},
	{"json_array", func(r *rand.Rand, mid uint16) []byte {
		return request(coapmsg.NonConfirmable, mid, []string{"soak", "hostile"}, 50, []byte(`[1,2,3]`))
	}},
	{"bad_path", func(r *rand.Rand, mid uint16) []byte {
		return request(coapmsg.Confirmable, mid, []string{"soak", "no spaces!"}, 50, []byte(`{"n":1}`))
	}},
	{"three_segments", func(r *rand.Rand, mid uint16) []byte {
		return request(coapmsg.Confirmable, mid, []string{"a", "b", "c"}, 50, []byte(`{"n":1}`))
	}},
	{"too_large", func(r *rand.Rand, mid uint16) []byte {
		p := make([]byte, 9000)
		copy(p, `{"x":"`)
		for i := 6; i < len(p)-2; i++ {
			p[i] = 'x'
		}
		copy(p[len(p)-2:], `"}`)
		return request(coapmsg.Confirmable, mid, []string{"soak", "hostile"}, 50, p)
	}},
	{"cbor_truncated", func(r *rand.Rand, mid uint16) []byte {
		// A CBOR map of one pair whose value is missing: refused whether or not the gateway
		// takes CBOR (a whole {"n":1} would be telemetry once it does).
		return request(coapmsg.Confirmable, mid, []string{"soak", "hostile"}, 60, []byte{0xa1, 0x61, 0x6e})
	}},
	{"critical_option", func(r *rand.Rand, mid uint16) []byte {
		m := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: mid, Token: []byte{1},
			Options: []coapmsg.Option{{Number: coapmsg.URIPath, Value: []byte("soak")}, {Number: coapmsg.URIPath, Value: []byte("hostile")},
				{Number: coapmsg.Block1, Value: []byte{0x0e}}}, Payload: []byte(`{"n":1}`)}
		b, _ := m.Append(nil)
		return b
	}},
	{"ping", func(r *rand.Rand, mid uint16) []byte { return []byte{0x40, 0x00, byte(mid >> 8), byte(mid)} }},
	{"option_flood", func(r *rand.Rand, mid uint16) []byte {
		m := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: mid, Token: []byte{2}}
		for range 100 {
			m.Options = append(m.Options, coapmsg.Option{Number: coapmsg.URIQuery, Value: []byte("q")})
		}
		b, _ := m.Append(nil)
		return b
	}},
	{"well_known_core", func(r *rand.Rand, mid uint16) []byte {
		return request(coapmsg.Confirmable, mid, []string{".well-known", "core"}, -1, nil)
	}},
}

// request encodes a POST (GET without payload) to path with Content-Format cf (-1: none).
func request(typ coapmsg.Type, mid uint16, path []string, cf int, payload []byte) []byte {
	m := coapmsg.Message{Type: typ, Code: coapmsg.POST, MID: mid, Token: []byte{0xbb, byte(mid)}, Payload: payload}
	if payload == nil {
		m.Code = coapmsg.GET
	}
	for _, s := range path {
		m.Options = append(m.Options, coapmsg.Option{Number: coapmsg.URIPath, Value: []byte(s)})
	}
	if cf >= 0 {
		m.Options = append(m.Options, coapmsg.Option{Number: coapmsg.ContentFormat, Value: coapmsg.AppendUint(nil, uint32(cf))})
	}
	b, err := m.Append(nil)
	if err != nil {
		panic(err)
	}
	return b
}

// hostile sends hostile datagrams at a rate that makes them cfg.hostile of all datagrams, from
// a few sockets of which one is replaced every so often (new source ports for the gateway's
// per-address state), and counts the answers by code.
type hostile struct {
	cfg   *loadConfig
	every time.Duration

	mu      sync.Mutex
	sent    map[string]uint64
	answers map[string]uint64
	wg      sync.WaitGroup
}

// hostileSummary is what the hostile sender did.
type hostileSummary struct {
	Sent    map[string]uint64 `json:"sent"`    // by kind
	Answers map[string]uint64 `json:"answers"` // by code ("RST" for resets)
}

func newHostile(cfg *loadConfig) *hostile {
	h := &hostile{cfg: cfg, sent: map[string]uint64{}, answers: map[string]uint64{}}
	if cfg.hostile > 0 {
		validPerSec := float64(cfg.devices) / cfg.interval.Seconds()
		perSec := validPerSec * cfg.hostile / (1 - cfg.hostile)
		h.every = time.Duration(float64(time.Second) / perSec)
	}
	return h
}

const hostileSockets = 8

func (h *hostile) run(ctx context.Context) {
	if h.every <= 0 {
		return
	}
	defer h.wg.Wait()
	rng := rand.New(rand.NewPCG(h.cfg.seed, 0x4057))
	var socks [hostileSockets]*net.UDPConn
	defer func() {
		for _, s := range socks {
			if s != nil {
				s.Close()
			}
		}
	}()
	tick := time.NewTicker(h.every)
	defer tick.Stop()
	mid := uint16(rng.Uint32())
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		k := rng.IntN(len(socks))
		if socks[k] == nil || i%50 == 0 {
			if socks[k] != nil {
				socks[k].Close()
			}
			socks[k] = h.dial()
			if socks[k] == nil {
				continue
			}
		}
		kind := hostileKinds[rng.IntN(len(hostileKinds))]
		mid++
		_, _ = socks[k].Write(kind.build(rng, mid))
		h.mu.Lock()
		h.sent[kind.name]++
		h.mu.Unlock()
	}
}

// dial opens a socket to the target and starts counting what comes back on it until it closes.
func (h *hostile) dial() *net.UDPConn {
	raddr, err := net.ResolveUDPAddr("udp", h.cfg.target)
	if err != nil {
		return nil
	}
	c, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		return nil
	}
	h.wg.Go(func() {
		buf := make([]byte, 65536)
		var m coapmsg.Message
		for {
			n, err := c.Read(buf)
			if err != nil {
				if refused(err) {
					continue
				}
				if !errors.Is(err, net.ErrClosed) {
					c.Close()
				}
				return
			}
			code := "malformed"
			if m.Decode(buf[:n]) == nil {
				code = m.Code.String()
				if m.Type == coapmsg.Reset {
					code = "RST"
				}
			}
			h.mu.Lock()
			h.answers[code]++
			h.mu.Unlock()
		}
	})
	return c
}

func (h *hostile) summary() hostileSummary {
	h.mu.Lock()
	defer h.mu.Unlock()
	return hostileSummary{Sent: h.sent, Answers: h.answers}
}
