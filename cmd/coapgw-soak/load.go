package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

type loadConfig struct {
	target       string
	devices      int
	interval     time.Duration
	duration     time.Duration
	typ          string
	prefix       string
	hostile      float64
	burstAt      time.Duration
	burstNames   int
	burstWorkers int
	burstPrefix  string
	acks         string
	seed         uint64
	t            timing
}

func (c *loadConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.target, "target", "127.0.0.1:5683", "gateway CoAP `host:port`")
	fs.IntVar(&c.devices, "devices", 400, "steady devices, one UDP socket each; even ones send CON, odd ones NON")
	fs.DurationVar(&c.interval, "interval", 2*time.Second, "each device sends one record this often (±20 %)")
	fs.DurationVar(&c.duration, "duration", 30*time.Minute, "how long to send; exchanges in flight then finish")
	fs.StringVar(&c.typ, "type", "soak", "thing type (first Uri-Path segment)")
	fs.StringVar(&c.prefix, "prefix", "soak-", "steady device names: prefix+number")
	fs.Float64Var(&c.hostile, "hostile", 0.10, "share of all datagrams that are hostile (0 to 0.9)")
	fs.DurationVar(&c.burstAt, "burst-at", 15*time.Minute, "when the burst of new device names starts (after start)")
	fs.IntVar(&c.burstNames, "burst-names", 5000, "new device names in the burst, one CON record each (0: no burst)")
	fs.IntVar(&c.burstWorkers, "burst-workers", 32, "sockets sending the burst")
	fs.StringVar(&c.burstPrefix, "burst-prefix", "burst-", "burst device names: prefix+number")
	fs.StringVar(&c.acks, "acks", "acks.txt", "write the acknowledged records here, one \"name n\" a line")
	fs.Uint64Var(&c.seed, "seed", 1, "random seed")
	fs.DurationVar(&c.t.ackTimeout, "ack-timeout", 2*time.Second, "RFC 7252 ACK_TIMEOUT")
	fs.IntVar(&c.t.maxRetransmit, "max-retransmit", 4, "RFC 7252 MAX_RETRANSMIT")
	fs.DurationVar(&c.t.nonTimeout, "non-timeout", 5*time.Second, "a NON request without a response by then is lost")
	fs.DurationVar(&c.t.separateWait, "separate-wait", 60*time.Second, "after an empty ACK, how long to wait for the separate response")
}

func (c *loadConfig) validate() error {
	var errs []error
	if c.devices < 1 || c.devices > 10000 {
		errs = append(errs, fmt.Errorf("devices must be 1-10000, got %d", c.devices))
	}
	if c.interval <= 0 || c.duration <= 0 {
		errs = append(errs, errors.New("interval and duration must be positive"))
	}
	if c.hostile < 0 || c.hostile > 0.9 {
		errs = append(errs, fmt.Errorf("hostile must be 0-0.9, got %v", c.hostile))
	}
	if c.burstNames < 0 || c.burstWorkers < 1 {
		errs = append(errs, errors.New("burst-names must not be negative, burst-workers must be positive"))
	}
	return errors.Join(errs...)
}

// summary is what load prints at the end.
type summary struct {
	Devices         int               `json:"devices"`
	ElapsedS        float64           `json:"elapsed_s"`
	Sent            uint64            `json:"sent"` // valid records, first transmissions
	Acknowledged    uint64            `json:"acknowledged"`
	Codes           map[string]uint64 `json:"codes"` // final response codes of valid records
	Lost            uint64            `json:"lost"`  // no response at all
	RST             uint64            `json:"rst"`
	Retransmissions uint64            `json:"retransmissions"`
	Separate        uint64            `json:"separate"`
	BurstSent       uint64            `json:"burst_sent"`
	BurstAcked      uint64            `json:"burst_acknowledged"`
	Hostile         hostileSummary    `json:"hostile"`
	AckedDevices    int               `json:"acknowledged_devices"`
}

// tally collects outcomes from every goroutine.
type tally struct {
	sent, acked, lost, rst, retrans, separate, burstSent, burstAcked atomic.Uint64

	mu    sync.Mutex
	codes map[string]uint64
	acks  map[string][]uint32
}

func (t *tally) record(name string, n uint32, r result, burst bool) {
	t.sent.Add(1)
	if burst {
		t.burstSent.Add(1)
	}
	t.retrans.Add(uint64(r.retransmits))
	if r.separate {
		t.separate.Add(1)
	}
	switch {
	case r.rst:
		t.rst.Add(1)
		return
	case r.code == 0:
		t.lost.Add(1)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.codes[r.code.String()]++
	if r.code == coapmsg.Changed {
		t.acked.Add(1)
		if burst {
			t.burstAcked.Add(1)
		}
		t.acks[name] = append(t.acks[name], n)
	}
}

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("coapgw-soak load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg loadConfig
	cfg.flags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(stderr, "coapgw-soak load: %v\n", err)
		return 2
	}
	t := &tally{codes: map[string]uint64{}, acks: map[string][]uint32{}}
	start := time.Now()
	sendCtx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	var wg sync.WaitGroup
	var clients []*client
	for i := range cfg.devices {
		c, err := dialClient(cfg.target, cfg.t, cfg.seed*1_000_003+uint64(i))
		if err != nil {
			fmt.Fprintf(stderr, "coapgw-soak load: device %d: %v\n", i, err)
			return 1
		}
		clients = append(clients, c)
	}
	for i, c := range clients {
		wg.Go(func() { steadyDevice(sendCtx, &cfg, c, i, t) })
	}
	h := newHostile(&cfg)
	wg.Go(func() { h.run(sendCtx) })
	if cfg.burstNames > 0 && cfg.burstAt < cfg.duration {
		wg.Go(func() { burst(sendCtx, &cfg, t, stderr) })
	}
	// A signal stops everything at once: closing the sockets ends the exchanges in flight.
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			for _, c := range clients {
				c.Close()
			}
		case <-stopped:
		}
	}()
	wg.Wait()
	close(stopped)
	for _, c := range clients {
		c.Close()
	}
	s := summary{
		Devices: cfg.devices, ElapsedS: time.Since(start).Seconds(),
		Sent: t.sent.Load(), Acknowledged: t.acked.Load(), Codes: t.codes, Lost: t.lost.Load(),
		RST: t.rst.Load(), Retransmissions: t.retrans.Load(), Separate: t.separate.Load(),
		BurstSent: t.burstSent.Load(), BurstAcked: t.burstAcked.Load(), Hostile: h.summary(),
		AckedDevices: len(t.acks),
	}
	if err := writeAcks(cfg.acks, t.acks); err != nil {
		fmt.Fprintf(stderr, "coapgw-soak load: %v\n", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return 1
	}
	if s.Acknowledged == 0 {
		fmt.Fprintln(stderr, "coapgw-soak load: no record was acknowledged")
		return 1
	}
	return 0
}

// steadyDevice sends one record every interval (±20 %) until ctx ends, CON for even device
// numbers and NON for odd ones.
func steadyDevice(ctx context.Context, cfg *loadConfig, c *client, i int, t *tally) {
	name := cfg.prefix + strconv.Itoa(i)
	con := i%2 == 0
	rng := rand.New(rand.NewPCG(cfg.seed, uint64(i)))
	mid := uint16(rng.Uint32())
	next := time.Now().Add(time.Duration(rng.Int64N(int64(cfg.interval))))
	var n uint32
	var pkt []byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		next = next.Add(cfg.interval*4/5 + time.Duration(rng.Int64N(int64(cfg.interval*2/5)+1)))
		n++
		mid++
		var tok [4]byte
		putToken(tok[:], rng.Uint32())
		pkt = telemetry(pkt[:0], cfg.typ, name, n, rng.Float64()*100, con, mid, tok[:])
		r, err := c.exchange(pkt, con, mid, tok[:])
		if err != nil {
			return // the socket was closed: interrupted
		}
		t.record(name, n, r, false)
		if time.Until(next) < -cfg.interval { // the gateway was down for long: do not catch up in a rush
			next = time.Now()
		}
	}
}

// burst sends one CON record from each of cfg.burstNames new device names, starting at
// cfg.burstAt, over cfg.burstWorkers sockets.
func burst(ctx context.Context, cfg *loadConfig, t *tally, stderr io.Writer) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(cfg.burstAt):
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range cfg.burstWorkers {
		c, err := dialClient(cfg.target, cfg.t, cfg.seed*7919+uint64(w))
		if err != nil {
			fmt.Fprintf(stderr, "coapgw-soak load: burst socket: %v\n", err)
			return
		}
		wg.Go(func() {
			defer c.Close()
			rng := rand.New(rand.NewPCG(cfg.seed, 1<<32+uint64(w)))
			mid := uint16(rng.Uint32())
			var pkt []byte
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(cfg.burstNames) {
					return
				}
				name := cfg.burstPrefix + strconv.FormatInt(i, 10)
				mid++
				var tok [4]byte
				putToken(tok[:], rng.Uint32())
				pkt = telemetry(pkt[:0], cfg.typ, name, 1, rng.Float64()*100, true, mid, tok[:])
				r, err := c.exchange(pkt, true, mid, tok[:])
				if err != nil {
					return
				}
				t.record(name, 1, r, true)
			}
		})
	}
	wg.Wait()
}

func putToken(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

// telemetry appends a POST /{typ}/{name} request with payload {"n":n,"v":v} (Content-Format 50).
func telemetry(b []byte, typ, name string, n uint32, v float64, con bool, mid uint16, token []byte) []byte {
	m := coapmsg.Message{Type: coapmsg.NonConfirmable, Code: coapmsg.POST, MID: mid, Token: token}
	if con {
		m.Type = coapmsg.Confirmable
	}
	m.Options = []coapmsg.Option{
		{Number: coapmsg.URIPath, Value: []byte(typ)},
		{Number: coapmsg.URIPath, Value: []byte(name)},
		{Number: coapmsg.ContentFormat, Value: coapmsg.AppendUint(nil, uint32(coapmsg.FormatJSON))},
	}
	m.Payload = fmt.Appendf(nil, `{"n":%d,"v":%.3f}`, n, v)
	out, err := m.Append(b)
	if err != nil {
		panic(err) // the message is built above and always encodes
	}
	return out
}

// writeAcks writes the acknowledged records, one "name n" a line, sorted.
func writeAcks(path string, acks map[string][]uint32) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write acks: %w", err)
	}
	w := bufio.NewWriter(f)
	names := make([]string, 0, len(acks))
	for name := range acks {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		ns := acks[name]
		slices.Sort(ns)
		for _, n := range ns {
			fmt.Fprintf(w, "%s %d\n", name, n)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("write acks: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write acks: %w", err)
	}
	return nil
}
