// Package loadgen simulates a fleet of CoAP devices to measure a CoAP server, as the command
// coapgw-bench (cmd/coapgw-bench; not linked into the gateway).
//
// Every virtual device has its own UDP socket (so its own source port, as the server sees a real
// fleet), its own MID space starting at a random value, and a random token per request. Each
// keeps Config.Inflight POST /{type}/{id} requests outstanding, with a JSON payload
// (Content-Format 50) padded to Config.PayloadSize, or the same reading as CBOR or SenML
// (Config.Format, --format; format.go). Config.Method and Config.Path change the
// method (PUT) and send every device's requests to one fixed path instead, so other servers can
// be measured the same way (make bench drives libcoap's example server with PUT /example_data). In CON mode requests are retransmitted as
// RFC 7252 §4.2 says (ACK_TIMEOUT, ACK_RANDOM_FACTOR, MAX_RETRANSMIT, doubling); piggybacked
// responses are matched by MID and token, an empty ACK is followed by a separate response
// matched by token, and a CON separate response is answered with an empty ACK. In NON mode
// requests are NON and a request without a response within NONTimeout counts as lost.
//
// A few goroutines (Config.Workers, default GOMAXPROCS) each own a share of the devices' sockets
// and drive them from an epoll loop with plain read/write system calls; nothing allocates per
// message, so one core drives well over 100,000 requests per second (docs/benchmarks.md).
//
// In DTLS mode (Config.DTLS; docs/benchmarks.md) every device first performs a DTLS 1.2 PSK
// handshake (pion/dtls, client side) as identity {Type}/{IDPrefix}{n}, with one key for all
// (Config.PSK as text, or Config.PSKHex) or its own key derived from a fleet master key
// (Config.FleetKeyHex, DevicePSK); at most Config.HandshakeConcurrency at once, each failing after
// Config.HandshakeTimeout. Result.DTLS reports the phase: handshakes per second, failures,
// latency, and the gateway's CPU per handshake and RSS per session. Each established session is
// then taken from pion into the record layer the gateway's server uses too (package dtlsrecord:
// pion's exported state and cipher suites), and the devices send as in plain mode, from the
// same epoll loop, one DTLS record per message, sealed and opened by the worker (pion's cipher
// suites allocate a little per record; plain mode allocates nothing).
//
// Only events inside the measured window (after Warmup, for Duration) are counted. Around the
// window Run reads its own CPU time and the kernel's UDP receive-buffer drop counters and,
// given a gateway pid and port, the gateway's CPU time, peak RSS and socket drops from /proc.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// Result is what a run measured. Counts cover the measured window only.
type Result struct {
	Target      string  `json:"target"`
	Mode        string  `json:"mode"`              // "CON" or "NON"
	Request     string  `json:"request,omitempty"` // method and path when not the default POST /{type}/{id}, e.g. "PUT /example_data"
	Devices     int     `json:"devices"`
	Inflight    int     `json:"inflight"`
	PayloadSize int     `json:"payload_size"`
	Workers     int     `json:"workers"`
	GOMAXPROCS  int     `json:"gomaxprocs"`
	WarmupS     float64 `json:"warmup_s"`
	ElapsedS    float64 `json:"elapsed_s"` // length of the measured window
	Interrupted bool    `json:"interrupted,omitempty"`

	DeliveredPerSec float64 `json:"delivered_per_s"` // 2.04 responses per second
	SentPerSec      float64 `json:"sent_per_s"`
	ResponsesPerSec float64 `json:"responses_per_s"`

	Sent              uint64            `json:"sent"`      // first transmissions
	Delivered         uint64            `json:"delivered"` // 2.04 responses
	Responses         uint64            `json:"responses"` // matched responses, any code
	Codes             map[string]uint64 `json:"codes"`     // response code → count; "RST" for resets
	Lost              uint64            `json:"lost"`      // CON: gave up after MaxRetransmit; NON: timed out
	SeparateLost      uint64            `json:"separate_lost"`
	Retransmissions   uint64            `json:"retransmissions"`
	EmptyACKs         uint64            `json:"empty_acks"`
	SeparateResponses uint64            `json:"separate_responses"`
	ACKsSent          uint64            `json:"acks_sent"`
	Unmatched         uint64            `json:"unmatched"`
	TokenMismatch     uint64            `json:"token_mismatch"`
	Malformed         uint64            `json:"malformed"`
	Unexpected        uint64            `json:"unexpected"`
	SendErrors        uint64            `json:"send_errors"`
	RecvErrors        uint64            `json:"recv_errors"`
	Outstanding       int               `json:"outstanding_at_end"`
	MaxPerDevice      uint64            `json:"max_requests_per_device"` // over the whole run

	// Latency is first transmission → matching 2.04; LatencyAll covers every response code.
	Latency    LatencySummary `json:"latency_2_04"`
	LatencyAll LatencySummary `json:"latency_all"`

	Loadgen LoadgenSample  `json:"loadgen"`
	Kernel  KernelSample   `json:"kernel"`
	Gateway *GatewaySample `json:"gateway,omitempty"`
	DTLS    *DTLSSample    `json:"dtls,omitempty"` // the handshake phase of a DTLS run

	Warnings []string `json:"warnings,omitempty"`
}

// LoadgenSample is the load generator's own cost during the window.
type LoadgenSample struct {
	CPUS            float64 `json:"cpu_s"`
	CoreUtil        float64 `json:"core_util"` // CPU seconds per wall second
	CPUUSPerRequest float64 `json:"cpu_us_per_request"`
	SocketDrops     uint64  `json:"socket_drops"` // drops on the devices' sockets
}

// KernelSample holds system-wide UDP counters (the network namespace's, load generator included).
type KernelSample struct {
	UDPRcvbufErrors  uint64 `json:"udp_rcvbuf_errors"`
	UDP6RcvbufErrors uint64 `json:"udp6_rcvbuf_errors"`
}

// GatewaySample is the gateway process's cost during the window, from /proc.
type GatewaySample struct {
	PID               int     `json:"pid"`
	CPUS              float64 `json:"cpu_s"`
	CoreUtil          float64 `json:"core_util"`
	CPUUSPerDelivered float64 `json:"cpu_us_per_delivered"`
	VmHWMKiB          uint64  `json:"vm_hwm_kib"` // peak RSS since the gateway started
	VmRSSKiB          uint64  `json:"vm_rss_kib"` // RSS at the end of the window
	Threads           int     `json:"threads"`
	Port              int     `json:"port,omitempty"`
	PortSocketDrops   uint64  `json:"port_socket_drops"` // drops on sockets bound to Port
}

// Run drives the fleet for cfg.Warmup + cfg.Duration and returns what it measured. When ctx
// ends during the measured window, Run returns the partial result with Interrupted set and
// ctx's error.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("loadgen config: %w", err)
	}
	raddr, err := net.ResolveUDPAddr("udp", cfg.Target)
	if err != nil {
		return nil, fmt.Errorf("resolve target: %w", err)
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	nw := min(cfg.Workers, cfg.Devices)
	res := &Result{
		Target: cfg.Target, Mode: "CON", Devices: cfg.Devices, Inflight: cfg.Inflight,
		PayloadSize: cfg.PayloadSize, Workers: nw, GOMAXPROCS: runtime.GOMAXPROCS(0),
		WarmupS: cfg.Warmup.Seconds(),
	}
	if cfg.NON {
		res.Mode = "NON"
	}
	if code, _ := cfg.code(); code != coapmsg.POST || cfg.Path != "" {
		path := cfg.Path
		if path == "" {
			path = "/" + cfg.Type + "/" + cfg.IDPrefix + "{n}"
		}
		res.Request = strings.ToUpper(cfg.Method) + " " + path
	}
	var sessions []*dtlsSession
	if cfg.DTLS {
		h, d, err := dtlsPhase(ctx, &cfg, raddr)
		if err != nil {
			return nil, err
		}
		defer h.close()
		res.DTLS, sessions = d, h.sessions
		if err := ctx.Err(); err != nil {
			res.Interrupted = true
			return res, err
		}
		if h.ok == 0 {
			res.Codes = map[string]uint64{}
			res.Warnings = append(res.Warnings, "no DTLS handshake succeeded: no message phase")
			return res, nil
		}
	}
	workers := make([]*worker, 0, nw)
	defer func() {
		for _, w := range workers {
			w.close()
		}
	}()
	winStart := int64(cfg.Warmup)
	winEnd := winStart + int64(cfg.Duration)
	for i := range nw {
		w, err := buildWorker(&cfg, raddr, sessions, i, nw, time.Time{}, winStart, winEnd, seed+uint64(i)*0x632be59bd9b4e019)
		if err != nil {
			return nil, err
		}
		workers = append(workers, w)
	}
	smp := &sampler{root: "/proc", pid: cfg.GatewayPID, port: cfg.GatewayPort, ownPorts: map[int]bool{}}
	for _, w := range workers {
		for _, d := range w.devs {
			smp.ownPorts[d.port] = true
		}
	}
	if _, err := smp.sample(); err != nil {
		return nil, fmt.Errorf("sample /proc: %w", err)
	}

	base := time.Now()
	for _, w := range workers {
		w.base = base
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make([]error, len(workers))
	failed := make(chan struct{})
	var failOnce sync.Once
	for i, w := range workers {
		wg.Go(func() {
			if errs[i] = w.run(&stop); errs[i] != nil {
				failOnce.Do(func() { close(failed) })
			}
		})
	}
	halt := func() { stop.Store(true); wg.Wait() }

	wait := func(until time.Time) error {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-failed:
			return errors.New("worker failed")
		}
	}
	if err := wait(base.Add(cfg.Warmup)); err != nil {
		halt()
		if e := errors.Join(errs...); e != nil {
			return nil, e
		}
		return nil, err
	}
	s0, err0 := smp.sample()
	cpu0, t0 := selfCPU(), time.Now()
	errWait := wait(base.Add(cfg.Warmup + cfg.Duration))
	s1, err1 := smp.sample()
	cpu1, t1 := selfCPU(), time.Now()
	halt()
	if e := errors.Join(errs...); e != nil {
		return nil, e
	}
	if errWait != nil {
		res.Interrupted = true
	}

	var c counters
	var lat, latDlvd histogram
	for _, w := range workers {
		c.add(&w.c)
		lat.merge(&w.lat)
		latDlvd.merge(&w.latDlvd)
		res.Outstanding += w.outstanding()
		res.MaxPerDevice = max(res.MaxPerDevice, w.midUse)
	}
	// The workers count events inside [warmup, warmup+duration) or until they were stopped.
	res.ElapsedS = cfg.Duration.Seconds()
	if res.Interrupted {
		res.ElapsedS = max(t1.Sub(base.Add(cfg.Warmup)).Seconds(), 1e-9)
	}
	res.fill(&c, &lat, &latDlvd)

	wall := t1.Sub(t0).Seconds()
	res.Loadgen.CPUS = float64(cpu1-cpu0) / 1e9
	res.Loadgen.CoreUtil = res.Loadgen.CPUS / wall
	if c.sent > 0 {
		res.Loadgen.CPUUSPerRequest = res.Loadgen.CPUS * 1e6 / float64(c.sent)
	}
	switch {
	case err0 != nil:
		res.Warnings = append(res.Warnings, fmt.Sprintf("sampling /proc before the window: %v", err0))
	case err1 != nil:
		res.Warnings = append(res.Warnings, fmt.Sprintf("sampling /proc after the window: %v", err1))
	default:
		res.Loadgen.SocketDrops = s1.ownDrops - s0.ownDrops
		res.Kernel = KernelSample{
			UDPRcvbufErrors:  s1.udpRcvbuf - s0.udpRcvbuf,
			UDP6RcvbufErrors: s1.udp6Rcvbuf - s0.udp6Rcvbuf,
		}
		if cfg.GatewayPID > 0 {
			g := &GatewaySample{
				PID:      cfg.GatewayPID,
				CPUS:     float64(s1.cpuTicks-s0.cpuTicks) / userHZ,
				VmHWMKiB: s1.vmHWMKiB,
				VmRSSKiB: s1.vmRSSKiB,
				Threads:  s1.threads,
				Port:     cfg.GatewayPort,
			}
			g.CoreUtil = g.CPUS / wall
			if c.delivered > 0 {
				g.CPUUSPerDelivered = g.CPUS * 1e6 / float64(c.delivered)
			}
			if cfg.GatewayPort > 0 {
				g.PortSocketDrops = s1.portDrops - s0.portDrops
			}
			res.Gateway = g
		}
	}
	if res.MaxPerDevice > 1<<16 {
		res.Warnings = append(res.Warnings, fmt.Sprintf(
			"a device sent %d requests: its 16-bit MIDs wrapped, and a server deduplicating for EXCHANGE_LIFETIME (247 s) may answer later requests from its cache; use more devices",
			res.MaxPerDevice))
	}
	if res.Sent == 0 {
		res.Warnings = append(res.Warnings, "no request was sent inside the measured window")
	} else if res.Responses == 0 {
		res.Warnings = append(res.Warnings, "no response inside the measured window: is the target up?")
	}
	if res.Interrupted {
		return res, errWait
	}
	return res, nil
}

func (r *Result) fill(c *counters, lat, latDlvd *histogram) {
	r.Sent, r.Delivered, r.Responses = c.sent, c.delivered, c.responses
	r.Lost, r.SeparateLost, r.Retransmissions = c.lost, c.separateLost, c.retransmissions
	r.EmptyACKs, r.SeparateResponses, r.ACKsSent = c.emptyACKs, c.separate, c.acksSent
	r.Unmatched, r.TokenMismatch, r.Malformed, r.Unexpected = c.unmatched, c.tokenMismatch, c.malformed, c.unexpected
	r.SendErrors, r.RecvErrors = c.sendErrors, c.recvErrors
	r.Codes = map[string]uint64{}
	for code, n := range c.codes {
		if n > 0 {
			r.Codes[coapmsg.Code(code).String()] = n
		}
	}
	if c.rst > 0 {
		r.Codes["RST"] = c.rst
	}
	r.DeliveredPerSec = float64(c.delivered) / r.ElapsedS
	r.SentPerSec = float64(c.sent) / r.ElapsedS
	r.ResponsesPerSec = float64(c.responses) / r.ElapsedS
	r.Latency = latDlvd.summary()
	r.LatencyAll = lat.summary()
}
