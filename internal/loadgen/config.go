package loadgen

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// RFC 7252 §4.8 transmission parameters.
const (
	DefaultAckTimeout      = 2 * time.Second
	DefaultAckRandomFactor = 1.5
	DefaultMaxRetransmit   = 4
)

// Config says what fleet to simulate and where to send it. Start from DefaultConfig: the zero
// value of Warmup, Ramp and MaxRetransmit is meaningful, so zero fields are not filled in.
type Config struct {
	Target      string        // host:port of the CoAP server
	Devices     int           // virtual devices, one UDP socket each
	Inflight    int           // requests each device keeps outstanding
	PayloadSize int           // bytes of JSON payload per request (at least the unpadded object)
	Format      string        // payload format: json (default), cbor, senml-json, senml-cbor (format.go)
	Duration    time.Duration // measured window
	Warmup      time.Duration // traffic before the measured window, not counted
	Ramp        time.Duration // devices start evenly spread over this span
	NON         bool          // send NON requests instead of CON
	Method      string        // "post" (the default) or "put"
	Path        string        // if set, every device sends to this path (e.g. /example_data), not /{Type}/{IDPrefix}{n}
	Type        string        // first Uri-Path segment (when Path is empty)
	IDPrefix    string        // device n uses second segment IDPrefix+n (when Path is empty)
	TokenLen    int           // token bytes, 1..8, random per request
	JSON        bool          // print the result as JSON (used by the command, not by Run)
	Workers     int           // goroutines, each owning an epoll set of devices

	AckTimeout      time.Duration // RFC 7252 ACK_TIMEOUT
	AckRandomFactor float64       // RFC 7252 ACK_RANDOM_FACTOR
	MaxRetransmit   int           // RFC 7252 MAX_RETRANSMIT
	NONTimeout      time.Duration // a NON request without a response by then counts as lost

	GatewayPID  int // if set, sample this process's CPU time and peak RSS around the window
	GatewayPort int // if set, sample the kernel's drop counter of the UDP sockets bound to this port

	Seed uint64 // random seed for MIDs and tokens; 0 picks one

	// DTLS mode: every device performs a DTLS 1.2 PSK handshake as identity
	// {Type}/{IDPrefix}{n} before the message phase and sends its requests over that session.
	DTLS                 bool
	DTLSCipher           string        // "ccm8" (TLS_PSK_WITH_AES_128_CCM_8, the default) or "gcm" (TLS_PSK_WITH_AES_128_GCM_SHA256)
	PSK                  string        // one key for every device, as text (what libcoap's -k takes)
	PSKHex               string        // one key for every device, hex
	FleetKeyHex          string        // fleet master key, hex: device keys are derived from it (DevicePSK)
	HandshakeConcurrency int           // handshakes in progress at once
	HandshakeTimeout     time.Duration // a handshake not done by then fails
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Target:          "127.0.0.1:5683",
		Devices:         256,
		Inflight:        2,
		PayloadSize:     64,
		Duration:        10 * time.Second,
		Warmup:          time.Second,
		Ramp:            100 * time.Millisecond,
		Method:          "post",
		Type:            "bench",
		IDPrefix:        "bench-", // not dev-: the README's example device is sensor/dev-1, and a thing has one type
		TokenLen:        4,
		Workers:         runtime.GOMAXPROCS(0),
		AckTimeout:      DefaultAckTimeout,
		AckRandomFactor: DefaultAckRandomFactor,
		MaxRetransmit:   DefaultMaxRetransmit,
		NONTimeout:      DefaultAckTimeout,

		DTLSCipher:           "ccm8",
		HandshakeConcurrency: 64,
		HandshakeTimeout:     10 * time.Second,
	}
}

// Flags registers the load generator's flags on fs, bound to c's fields with c's current values
// as defaults; call it on DefaultConfig().
func (c *Config) Flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Target, "target", c.Target, "CoAP server `host:port`")
	fs.IntVar(&c.Devices, "devices", c.Devices, "virtual devices, each with its own UDP socket")
	fs.IntVar(&c.Inflight, "inflight", c.Inflight, "requests each device keeps in flight")
	fs.IntVar(&c.PayloadSize, "payload-size", c.PayloadSize, "JSON payload size in `bytes`")
	fs.StringVar(&c.Format, "format", c.Format, "payload `format`: json, cbor, senml-json or senml-cbor (the same reading, padded alike)")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "measured window")
	fs.DurationVar(&c.Warmup, "warmup", c.Warmup, "traffic before the measured window, not counted")
	fs.DurationVar(&c.Ramp, "ramp", c.Ramp, "spread device start-up over this span")
	fs.BoolVar(&c.NON, "non", c.NON, "send NON requests and count NON responses")
	fs.StringVar(&c.Method, "method", c.Method, "request method: post or put")
	fs.StringVar(&c.Path, "path", c.Path, "send every request to this `path` (e.g. /example_data) instead of /{type}/{id-prefix}{n}")
	fs.StringVar(&c.Type, "type", c.Type, "thing type: first Uri-Path segment (without --path)")
	fs.StringVar(&c.IDPrefix, "id-prefix", c.IDPrefix, "device id prefix: second Uri-Path segment is prefix+n (without --path)")
	fs.IntVar(&c.TokenLen, "token-len", c.TokenLen, "token length in bytes (1-8)")
	fs.BoolVar(&c.JSON, "json", c.JSON, "print the result as JSON")
	fs.IntVar(&c.Workers, "workers", c.Workers, "event-loop goroutines (default GOMAXPROCS)")
	fs.DurationVar(&c.AckTimeout, "ack-timeout", c.AckTimeout, "RFC 7252 ACK_TIMEOUT")
	fs.Float64Var(&c.AckRandomFactor, "ack-random-factor", c.AckRandomFactor, "RFC 7252 ACK_RANDOM_FACTOR")
	fs.IntVar(&c.MaxRetransmit, "max-retransmit", c.MaxRetransmit, "RFC 7252 MAX_RETRANSMIT")
	fs.DurationVar(&c.NONTimeout, "non-timeout", c.NONTimeout, "NON mode: count a request as lost after this long without a response")
	fs.IntVar(&c.GatewayPID, "gateway-pid", c.GatewayPID, "sample CPU time and peak RSS of this `pid`")
	fs.IntVar(&c.GatewayPort, "gateway-port", c.GatewayPort, "sample kernel drops of UDP sockets bound to this `port`")
	fs.Uint64Var(&c.Seed, "seed", c.Seed, "random seed for MIDs and tokens (0: random)")
	fs.BoolVar(&c.DTLS, "dtls", c.DTLS, "DTLS 1.2 PSK: every device handshakes as identity {type}/{id-prefix}{n}, then sends over its session")
	fs.StringVar(&c.DTLSCipher, "dtls-cipher", c.DTLSCipher, "DTLS cipher suite: ccm8 (TLS_PSK_WITH_AES_128_CCM_8) or gcm (TLS_PSK_WITH_AES_128_GCM_SHA256)")
	fs.StringVar(&c.PSK, "psk", c.PSK, "DTLS: one pre-shared `key` for every device, as text (the bytes libcoap's -k takes)")
	fs.StringVar(&c.PSKHex, "psk-hex", c.PSKHex, "DTLS: one pre-shared key for every device, in `hex`")
	fs.StringVar(&c.FleetKeyHex, "fleet-key-hex", c.FleetKeyHex, "DTLS: fleet master key in `hex`; each device's key is HKDF-SHA256(master, info \"coapgw psk v1 \"+identity)")
	fs.IntVar(&c.HandshakeConcurrency, "handshake-concurrency", c.HandshakeConcurrency, "DTLS: handshakes in progress at once")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", c.HandshakeTimeout, "DTLS: a handshake not complete by then counts as failed")
}

var uriSegment = regexp.MustCompile(`^[a-zA-Z0-9:_-]{1,128}$`)

// Validate reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, _, err := net.SplitHostPort(c.Target); err != nil {
		bad("target %q: %v", c.Target, err)
	}
	if c.Devices < 1 {
		bad("devices must be at least 1, got %d", c.Devices)
	}
	if c.Inflight < 1 || c.Inflight > 64 {
		bad("inflight must be 1-64, got %d", c.Inflight)
	}
	if c.PayloadSize < 0 || c.PayloadSize > 60000 {
		bad("payload-size must be 0-60000, got %d", c.PayloadSize)
	}
	if _, ok := formats[c.Format]; !ok && c.Format != "" {
		bad("format must be json, cbor, senml-json or senml-cbor, got %q", c.Format)
	}
	if c.Duration <= 0 {
		bad("duration must be positive, got %v", c.Duration)
	}
	if c.Warmup < 0 {
		bad("warmup must not be negative, got %v", c.Warmup)
	}
	if c.Ramp < 0 {
		bad("ramp must not be negative, got %v", c.Ramp)
	}
	if _, err := c.code(); err != nil {
		bad("%v", err)
	}
	if _, err := c.pathSegments(); err != nil {
		bad("%v", err)
	}
	if !uriSegment.MatchString(c.Type) {
		bad("type %q must match %s", c.Type, uriSegment)
	}
	if !uriSegment.MatchString(c.IDPrefix + "0") {
		bad("id-prefix %q must make ids matching %s", c.IDPrefix, uriSegment)
	}
	if c.TokenLen < 1 || c.TokenLen > 8 {
		bad("token-len must be 1-8, got %d", c.TokenLen)
	}
	if c.Workers < 1 {
		bad("workers must be at least 1, got %d", c.Workers)
	}
	if c.AckTimeout <= 0 {
		bad("ack-timeout must be positive, got %v", c.AckTimeout)
	}
	if c.AckRandomFactor < 1 {
		bad("ack-random-factor must be at least 1, got %v", c.AckRandomFactor)
	}
	if c.MaxRetransmit < 0 || c.MaxRetransmit > 20 {
		bad("max-retransmit must be 0-20, got %d", c.MaxRetransmit)
	}
	if c.NONTimeout <= 0 {
		bad("non-timeout must be positive, got %v", c.NONTimeout)
	}
	if c.GatewayPID < 0 {
		bad("gateway-pid must not be negative, got %d", c.GatewayPID)
	}
	if c.GatewayPort < 0 || c.GatewayPort > 65535 {
		bad("gateway-port must be 0-65535, got %d", c.GatewayPort)
	}
	if c.DTLS {
		errs = append(errs, c.validateDTLS()...)
	} else if c.PSK != "" || c.PSKHex != "" || c.FleetKeyHex != "" {
		bad("psk, psk-hex and fleet-key-hex need --dtls")
	}
	return errors.Join(errs...)
}

// code is the request's CoAP method.
func (c *Config) code() (coapmsg.Code, error) {
	switch strings.ToLower(c.Method) {
	case "post":
		return coapmsg.POST, nil
	case "put":
		return coapmsg.PUT, nil
	}
	return 0, fmt.Errorf("method %q must be post or put", c.Method)
}

// pathSegments splits Path into its Uri-Path segments; nil when Path is empty.
func (c *Config) pathSegments() ([]string, error) {
	if c.Path == "" {
		return nil, nil
	}
	if !strings.HasPrefix(c.Path, "/") {
		return nil, fmt.Errorf("path %q must start with /", c.Path)
	}
	segs := strings.Split(c.Path[1:], "/")
	for _, s := range segs {
		if !uriSegment.MatchString(s) {
			return nil, fmt.Errorf("path %q: segment %q must match %s", c.Path, s, uriSegment)
		}
	}
	return segs, nil
}

// maxTransmitSpan is how long a CON exchange may take before the sender gives up: the initial
// timeout at its largest, doubled MaxRetransmit times and summed (RFC 7252 MAX_TRANSMIT_SPAN plus
// the last wait, i.e. MAX_TRANSMIT_WAIT).
func (c *Config) maxTransmitWait() time.Duration {
	return time.Duration(float64(c.AckTimeout) * float64(int64(1)<<(c.MaxRetransmit+1)-1) * c.AckRandomFactor)
}
