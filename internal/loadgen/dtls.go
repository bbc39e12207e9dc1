package loadgen

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"
	"github.com/pion/logging"
)

// pskInfoPrefix starts the HKDF info of a device key derived from the fleet master key.
const pskInfoPrefix = "coapgw psk v1 "

// DevicePSK derives the pre-shared key of identity ({type}/{id}) from the fleet master key:
// HKDF-SHA256(secret = master, salt = nil, info = "coapgw psk v1 " + identity), 16 bytes. The
// gateway derives the same key when it is configured with the same master key.
func DevicePSK(master []byte, identity string) ([]byte, error) {
	return hkdf.Key(sha256.New, master, nil, pskInfoPrefix+identity, 16)
}

// identity is device g's PSK identity, {Type}/{IDPrefix}{g}: the thing its plain-mode path names.
func (c *Config) identity(g int) string { return c.Type + "/" + c.IDPrefix + strconv.Itoa(g) }

func (c *Config) cipherSuite() (dtls.CipherSuiteID, error) {
	switch c.DTLSCipher {
	case "ccm8":
		return dtls.TLS_PSK_WITH_AES_128_CCM_8, nil
	case "gcm":
		return dtls.TLS_PSK_WITH_AES_128_GCM_SHA256, nil
	}
	return 0, fmt.Errorf("dtls-cipher %q must be ccm8 or gcm", c.DTLSCipher)
}

// keys returns how a device's key is found ("fixed" or "fleet") and the function that finds it.
func (c *Config) keys() (string, func(identity string) ([]byte, error), error) {
	set := 0
	for _, s := range []string{c.PSK, c.PSKHex, c.FleetKeyHex} {
		if s != "" {
			set++
		}
	}
	if set != 1 {
		return "", nil, errors.New("dtls needs exactly one of psk, psk-hex and fleet-key-hex")
	}
	switch {
	case c.PSK != "":
		key := []byte(c.PSK)
		return "fixed", func(string) ([]byte, error) { return key, nil }, nil
	case c.PSKHex != "":
		key, err := hex.DecodeString(c.PSKHex)
		if err != nil || len(key) == 0 {
			return "", nil, fmt.Errorf("psk-hex must be non-empty hex: %v", err)
		}
		return "fixed", func(string) ([]byte, error) { return key, nil }, nil
	}
	master, err := hex.DecodeString(c.FleetKeyHex)
	if err != nil {
		return "", nil, fmt.Errorf("fleet-key-hex must be hex: %v", err)
	}
	if len(master) < 16 {
		return "", nil, fmt.Errorf("fleet-key-hex must be at least 16 bytes, got %d", len(master))
	}
	return "fleet", func(id string) ([]byte, error) { return DevicePSK(master, id) }, nil
}

func (c *Config) validateDTLS() []error {
	var errs []error
	if _, err := c.cipherSuite(); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := c.keys(); err != nil {
		errs = append(errs, err)
	}
	if c.HandshakeConcurrency < 1 {
		errs = append(errs, fmt.Errorf("handshake-concurrency must be at least 1, got %d", c.HandshakeConcurrency))
	}
	if c.HandshakeTimeout <= 0 {
		errs = append(errs, fmt.Errorf("handshake-timeout must be positive, got %v", c.HandshakeTimeout))
	}
	return errs
}

// quietLogs keeps pion from logging every failed handshake of a large fleet; failures are counted.
var quietLogs = &logging.DefaultLoggerFactory{DefaultLogLevel: logging.LogLevelDisabled, ScopeLevels: map[string]logging.LogLevel{}}

// maxHandshakeErrors bounds the distinct handshake error messages a result lists.
const maxHandshakeErrors = 8

// handshakes is the outcome of the handshake phase.
type handshakes struct {
	sessions []*dtlsSession // by device; nil where the handshake failed
	ok       uint64
	failed   uint64
	errs     map[string]uint64
	lat      histogram
	elapsed  time.Duration
}

func (h *handshakes) close() {
	for _, s := range h.sessions {
		if s != nil {
			s.close()
		}
	}
}

// handshakeAll performs every device's handshake, at most cfg.HandshakeConcurrency at once. It
// stops starting new ones when ctx ends.
func handshakeAll(ctx context.Context, cfg *Config, raddr *net.UDPAddr) (*handshakes, error) {
	suite, err := cfg.cipherSuite()
	if err != nil {
		return nil, err
	}
	_, keyOf, err := cfg.keys()
	if err != nil {
		return nil, err
	}
	h := &handshakes{sessions: make([]*dtlsSession, cfg.Devices), errs: map[string]uint64{}}
	var next atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for range min(cfg.HandshakeConcurrency, cfg.Devices) {
		wg.Go(func() {
			var lat histogram
			var ok, failed uint64
			errs := map[string]uint64{}
			for ctx.Err() == nil {
				g := int(next.Add(1) - 1)
				if g >= cfg.Devices {
					break
				}
				t0 := time.Now()
				conn, err := handshake(ctx, cfg, raddr, suite, keyOf, g)
				if err != nil {
					failed++
					errs[err.Error()]++
					continue
				}
				lat.record(int64(time.Since(t0)))
				ok++
				h.sessions[g] = conn
			}
			mu.Lock()
			defer mu.Unlock()
			h.ok += ok
			h.failed += failed
			h.lat.merge(&lat)
			for msg, n := range errs {
				if _, seen := h.errs[msg]; !seen && len(h.errs) >= maxHandshakeErrors {
					msg = "other"
				}
				h.errs[msg] += n
			}
		})
	}
	wg.Wait()
	h.elapsed = time.Since(start)
	return h, nil
}

// handshake opens device g's socket and performs its DTLS handshake.
func handshake(ctx context.Context, cfg *Config, raddr *net.UDPAddr, suite dtls.CipherSuiteID,
	keyOf func(string) ([]byte, error), g int) (*dtlsSession, error) {
	id := cfg.identity(g)
	key, err := keyOf(id)
	if err != nil {
		return nil, err
	}
	uc, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		return nil, err
	}
	mc := &mutableConn{UDPConn: uc}
	conn, err := dtls.ClientWithOptions(mc, raddr,
		dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		dtls.WithPSKIdentityHint([]byte(id)),
		dtls.WithCipherSuites(suite),
		// The client supports Connection IDs (RFC 9146): it sends the ID the server issues.
		dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
		dtls.WithLoggerFactory(quietLogs),
	)
	if err != nil {
		uc.Close()
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		conn.Close()
		uc.Close() // pion may have closed it already
		return nil, err
	}
	return handover(conn, uc, mc)
}

// DTLSSample is what the handshake phase of a DTLS run measured.
type DTLSSample struct {
	CipherSuite       string            `json:"cipher_suite"`
	Keys              string            `json:"keys"` // "fixed": one key for all; "fleet": derived per device
	Concurrency       int               `json:"handshake_concurrency"`
	Handshakes        uint64            `json:"handshakes"` // completed: the established sessions
	Failures          uint64            `json:"handshake_failures"`
	Errors            map[string]uint64 `json:"handshake_errors,omitempty"` // failure message → count
	ElapsedS          float64           `json:"handshake_elapsed_s"`
	HandshakesPerSec  float64           `json:"handshakes_per_s"`
	Latency           LatencySummary    `json:"handshake_latency"` // start → established, completed ones
	LoadgenCPUS       float64           `json:"loadgen_cpu_s"`
	LoadgenCPUUSPerHS float64           `json:"loadgen_cpu_us_per_handshake"`
	LoadgenRSSKiB     uint64            `json:"loadgen_rss_kib"` // the load generator's own RSS with every session established

	Gateway *DTLSGatewaySample `json:"gateway,omitempty"`
}

// DTLSGatewaySample is the gateway's cost of the handshake phase, from /proc.
type DTLSGatewaySample struct {
	CPUS              float64 `json:"cpu_s"`
	CoreUtil          float64 `json:"core_util"`
	CPUUSPerHandshake float64 `json:"cpu_us_per_handshake"`
	RSSBeforeKiB      uint64  `json:"rss_before_kib"` // VmRSS before the first handshake
	RSSAfterKiB       uint64  `json:"rss_after_kib"`  // VmRSS with every session established
	BytesPerSession   float64 `json:"bytes_per_session"`
}

// dtlsPhase performs the handshakes and measures them (the gateway's CPU and RSS when cfg names
// its pid). The caller closes the sessions.
func dtlsPhase(ctx context.Context, cfg *Config, raddr *net.UDPAddr) (*handshakes, *DTLSSample, error) {
	suite, err := cfg.cipherSuite()
	if err != nil {
		return nil, nil, err
	}
	keys, _, err := cfg.keys()
	if err != nil {
		return nil, nil, err
	}
	smp := &sampler{root: "/proc", pid: cfg.GatewayPID}
	s0, err0 := smp.sample()
	cpu0 := selfCPU()
	h, err := handshakeAll(ctx, cfg, raddr)
	if err != nil {
		return nil, nil, err
	}
	cpu1 := selfCPU()
	s1, err1 := smp.sample()
	d := &DTLSSample{
		CipherSuite: dtls.CipherSuiteName(suite), Keys: keys, Concurrency: cfg.HandshakeConcurrency,
		Handshakes: h.ok, Failures: h.failed, ElapsedS: h.elapsed.Seconds(),
		Latency: h.lat.summary(), LoadgenCPUS: float64(cpu1-cpu0) / 1e9,
	}
	if len(h.errs) > 0 {
		d.Errors = h.errs
	}
	if _, rss, err := readProcStatus("/proc/self/status"); err == nil {
		d.LoadgenRSSKiB = rss
	}
	if d.ElapsedS > 0 {
		d.HandshakesPerSec = float64(h.ok) / d.ElapsedS
	}
	if h.ok > 0 {
		d.LoadgenCPUUSPerHS = d.LoadgenCPUS * 1e6 / float64(h.ok)
	}
	if cfg.GatewayPID > 0 && err0 == nil && err1 == nil {
		g := &DTLSGatewaySample{
			CPUS:         float64(s1.cpuTicks-s0.cpuTicks) / userHZ,
			RSSBeforeKiB: s0.vmRSSKiB,
			RSSAfterKiB:  s1.vmRSSKiB,
		}
		if d.ElapsedS > 0 {
			g.CoreUtil = g.CPUS / d.ElapsedS
		}
		if h.ok > 0 {
			g.CPUUSPerHandshake = g.CPUS * 1e6 / float64(h.ok)
			g.BytesPerSession = (float64(s1.vmRSSKiB) - float64(s0.vmRSSKiB)) * 1024 / float64(h.ok)
		}
		d.Gateway = g
	}
	return h, d, nil
}
