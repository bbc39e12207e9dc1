// Package config holds the settings of every coapgw role — the gateway (`coapgw serve`), the SQS
// worker (`coapgw process`) and the Lambda handler (cmd/coapgw-lambda) — as one typed struct
// with one section per component, filled from defaults, an optional YAML file, COAPGW_*
// environment variables and command-line flags (later wins), and validated all at once.
//
// One table (options.go) lists every setting once: its flag name, which roles have it, its help
// and the field it sets. The environment variable is COAPGW_ followed by the flag name in upper
// snake case (--spool-max-bytes: COAPGW_SPOOL_MAX_BYTES) and the YAML key is the flag name in
// snake case (spool_max_bytes); YAML files are flat (one key per setting, as --check-config
// prints them) and unknown keys are an error. Sizes take units (1GiB, 64MiB, 8KiB, 8KB, or
// plain bytes); durations are Go durations (250ms, 5s, 168h).
//
// Validate reports every problem at once, including addresses that cannot be bound (a port out
// of range, a host that does not resolve) and durations the components cannot work with; each
// role's --check-config prints the problems, or the effective settings as YAML.
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Role is a program reading the configuration; options name the roles they belong to.
type Role uint8

const (
	// Serve is the gateway: CoAP ingest, spool, and the local processor or the forwarder.
	Serve Role = 1 << iota
	// Process is `coapgw process`, the worker applying an SQS queue to AWS IoT.
	Process
	// Lambda is cmd/coapgw-lambda: the same processor as a Lambda function (environment only).
	Lambda
)

func (r Role) String() string {
	switch r {
	case Serve:
		return "serve"
	case Process:
		return "process"
	case Lambda:
		return "lambda"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// Config is every setting of every role, one section per component.
type Config struct {
	CoAP        CoAP
	DTLS        DTLS
	Credentials Credentials
	Ingest      Ingest
	Spool       Spool
	Local       Local
	Forward     Forward
	Consume     Consume
	IoT         IoT
	AWS         AWS
	HTTP        HTTP
	Log         Log
	Compat      Compat
	EMF         EMF
	Downlink    Downlink // downlink from AWS IoT (downlink.go)
}

// CoAP configures the UDP server and its exchange layer (internal/coapserver).
type CoAP struct {
	Addr              string        // coap-addr
	Sockets           int           // coap-sockets
	SocketBuffer      Size          // socket-buffer
	PiggybackDeadline time.Duration // piggyback-deadline
	DedupMaxEntries   int           // dedup-max-entries
	DedupPerPeer      int           // dedup-per-peer
	BlockSize         Size          // block-size: largest Block1/Block2 block, 16B–1KiB
	BlockMaxBytes     Size          // blockwise-max-bytes: request bodies in reassembly, all peers
	BlockPerPeer      int           // blockwise-per-peer: request bodies one peer reassembles at once
	BlockTimeout      time.Duration // blockwise-timeout: a body without a block for this long is dropped
	MaxObservers      int           // max-observers: Observe registrations kept (RFC 7641), per CoAP port
	ObserveKeepAlive  time.Duration // observe-keepalive: longest an observer goes without a CON notification
	ShutdownTimeout   time.Duration // shutdown-timeout: how long a stop waits for in-flight requests
	FailLinger        time.Duration // fail-linger: 5.03 and /readyz 503 after a component died, before the exit
	ReadyMaxLag       time.Duration // ready-max-lag: /readyz 503 while the stage after the spool is further behind; 0: never
}

// DTLS configures CoAP over DTLS 1.2 with PSK (internal/dtlsserver). The DTLS port is opened
// only when a credential source is configured (Credentials).
type DTLS struct {
	Addr             string        // coaps-addr
	MaxSessions      int           // dtls-max-sessions
	IdleTimeout      time.Duration // dtls-idle-timeout
	HibernateAfter   time.Duration // dtls-hibernate-after
	StateFile        string        // dtls-state-file; empty: <data-dir>/dtls-sessions
	MaxHandshakes    int           // dtls-max-handshakes: handshakes in progress at once
	HandshakeTimeout time.Duration // dtls-handshake-timeout
	RecheckInterval  time.Duration // dtls-recheck-interval: a live session's key looked up again
}

// Credentials configures device identity (internal/credential): per-device keys in the local
// registry (an operator key) or fleet keys derived from a master key; and the plain-CoAP policy.
type Credentials struct {
	PlainCoAP         string // plain-coap: open, unbound or off; empty: unbound with a credential source, else open
	KeyFile           string // key-file: the operator key, for per-device keys
	FleetKeyFile      string // fleet-key-file: the fleet master key
	FleetKeySecretARN string // fleet-key-secret-arn: the fleet master key in Secrets Manager
	RevocationFile    string // revocation-file: fleet identities revoked, one a line
	// Key and FleetKey are key text from COAPGW_KEY and COAPGW_FLEET_KEY: the environment only
	// (not a flag, not the file), and never printed.
	Key, FleetKey string
}

// Configured reports whether a credential source is set.
func (c Credentials) Configured() bool {
	return c.KeyFile != "" || c.Key != "" || c.FleetKeyFile != "" || c.FleetKey != "" || c.FleetKeySecretARN != ""
}

// Ingest configures the device API (internal/ingest).
type Ingest struct {
	GatewayID   string        // gateway-id
	MaxPayload  Size          // max-payload
	RetryAfter  time.Duration // retry-after
	DeviceRate  int           // device-rate
	DeviceBurst int           // device-burst

	// DeviceRateDevices (device-rate-devices) bounds the devices the --device-rate table tracks.
	DeviceRateDevices int
}

// Spool configures the gateway's durable inbox (internal/spool).
type Spool struct {
	DataDir      string // data-dir
	MaxBytes     Size   // spool-max-bytes
	SegmentBytes Size   // spool-segment-bytes
}

// Local configures local mode: the processor applying the spool to the embedded registry
// (internal/processor, internal/registry).
type Local struct {
	Process          string        // process: local or none
	Batch            int           // processor-batch
	BackoffMin       time.Duration // processor-backoff-min
	BackoffMax       time.Duration // processor-backoff-max
	HistoryMaxAge    time.Duration // history-max-age
	HistoryMaxPoints int           // history-max-points
	MaxThings        int           // max-things: 0 = no cap
	HistoryMaxBytes  Size          // history-max-bytes: 0 = no cap
	MaxSetAside      int           // max-set-aside
	MaxProperties    int           // max-properties: 0 = no cap
}

// Forward configures the AWS pipeline's forwarder from the spool to SQS (internal/forward).
type Forward struct {
	AckAfter        string        // ack-after: spool or queue
	QueueAckTimeout time.Duration // queue-ack-timeout
	Concurrency     int           // forward-concurrency
	MaxPending      int           // forward-max-pending
	Linger          time.Duration // forward-linger (negative: never wait)
	BackoffBase     time.Duration // forward-backoff-base
	BackoffMax      time.Duration // forward-backoff-max
	MaxRejects      int           // forward-max-rejects
	CommitInterval  time.Duration // forward-commit-interval
	ShutdownGrace   time.Duration // forward-shutdown-grace
	MaxWaiters      int           // forward-max-waiters
	QueueFIFO       bool          // fifo-queue: treat the queue as FIFO even without ".fifo"
	QueueMaxBatch   Size          // queue-max-batch-bytes: bytes per SendMessageBatch request
}

// Consume configures `coapgw process`'s SQS worker (internal/consume).
type Consume struct {
	Sink              string        // sink: awsiot
	Pollers           int           // pollers
	BatchSize         int           // batch-size
	VisibilityTimeout time.Duration // visibility-timeout
	WaitTime          time.Duration // wait-time
	BatchWait         time.Duration // batch-wait
	StopTimeout       time.Duration // stop-timeout
}

// IoT configures the AWS IoT sink (internal/sink/awsiot) of `coapgw process` and the Lambda.
type IoT struct {
	PublishTopic    string // publish-topic
	DataEndpoint    string // iot-data-endpoint
	ThingCacheSize  int    // thing-cache-size
	ThingCacheBytes Size   // thing-cache-bytes
	Concurrency     int    // iot-concurrency
	Ordered         bool   // fifo-queue
	AdoptThings     bool   // adopt-things
	Consumers       int    // iot-consumers
	CreateThingRate int    // iot-create-thing-rate
	PublishPack     bool   // publish-pack
}

// AWS holds what every AWS client shares.
type AWS struct {
	Queue    string // queue: the SQS queue URL (serve forwards to it, process consumes it)
	Endpoint string // aws-endpoint: base URL of every AWS API (emulators only)
}

// HTTP configures the operations server (internal/ops).
type HTTP struct {
	Addr         string // http-addr; empty disables
	Pprof        bool   // pprof
	TokenFile    string // http-token-file: the API token; generated in <data-dir>/http-token off loopback
	AllowedHosts string // http-allowed-hosts: extra Host names a loopback server answers to, comma-separated
	MetricsAuth  bool   // metrics-auth: /metrics needs the token too
	// ReadTimeout bounds how long a request's headers and body may take to arrive
	// (http-read-timeout); WriteTimeout how long writing a response may take (http-write-timeout;
	// the event stream extends it per event); IdleTimeout how long a keep-alive connection may
	// wait for its next request (http-idle-timeout).
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	IdleTimeout  time.Duration
	// MaxConns caps the connections open at once (http-max-conns); the server lowers it further
	// so that the descriptors it may hold leave a reserve under RLIMIT_NOFILE (internal/ops).
	MaxConns int
}

// Compat makes coapgw a drop-in replacement for the 2018 CoAP-to-AWS-IoT ingestor
// (docs/migrate-from-2018.md): its devices, its queue messages and its shadows.
type Compat struct {
	Device     string // compat: off, or seed (GET with a payload is telemetry; RECEIVED OK / FAILURE)
	Envelope   string // envelope: coapgw, or seed (the 2018 ingestor's SQS message)
	SeedShadow bool   // seed-shadow: online, uuid and type in reported state; type description, FirstSeen
}

// Log configures the logger.
type Log struct {
	Level  string // log-level: debug, info, warn or error
	Format string // log-format: text or json
}

// EMF configures the gateway's CloudWatch embedded metric format documents (internal/ops EMF):
// its stage lag and spool depth, for CloudWatch alarms.
type EMF struct {
	Interval  time.Duration // emf-interval: 0 (the default) writes none
	Addr      string        // emf-addr: "" the log stream (stderr); tcp:// or udp:// the CloudWatch agent
	Namespace string        // emf-namespace
	LogGroup  string        // emf-log-group: _aws.LogGroupName, where the agent puts them
}

// Default returns the configuration used when nothing is set: local mode on :5683 and :8080.
func Default() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "coapgw"
	}
	return Config{
		CoAP: CoAP{
			Addr: ":5683", Sockets: 1, SocketBuffer: 8 * MiB, PiggybackDeadline: time.Second,
			DedupMaxEntries: 500_000, DedupPerPeer: 1024, ShutdownTimeout: 10 * time.Second,
			FailLinger: 5 * time.Second, ReadyMaxLag: time.Minute,
			BlockSize: KiB, BlockMaxBytes: 32 * MiB, BlockPerPeer: 4, BlockTimeout: 247 * time.Second,
			MaxObservers: 10_000, ObserveKeepAlive: 24 * time.Hour,
		},
		DTLS: DTLS{Addr: ":5684", MaxSessions: 100_000, IdleTimeout: 24 * time.Hour, HibernateAfter: 30 * time.Second,
			MaxHandshakes: 1024, HandshakeTimeout: 10 * time.Second, RecheckInterval: time.Second},
		Ingest: Ingest{GatewayID: host, MaxPayload: 8192, RetryAfter: 5 * time.Second, DeviceBurst: 10, DeviceRateDevices: 1_000_000},
		Spool:  Spool{DataDir: "./data", MaxBytes: GiB, SegmentBytes: 64 * MiB},
		Local: Local{
			Process: "local", Batch: 20000, BackoffMin: 100 * time.Millisecond, BackoffMax: 30 * time.Second,
			HistoryMaxAge: 7 * 24 * time.Hour, HistoryMaxPoints: 1000,
			MaxThings: 100_000, HistoryMaxBytes: 8 * GiB, MaxSetAside: 10_000, MaxProperties: 256,
		},
		Forward: Forward{
			AckAfter: "spool", QueueAckTimeout: 3 * time.Second,
			Concurrency: 4, MaxPending: 1024, Linger: 10 * time.Millisecond,
			BackoffBase: 100 * time.Millisecond, BackoffMax: 30 * time.Second, MaxRejects: 3,
			CommitInterval: 100 * time.Millisecond, ShutdownGrace: 5 * time.Second, MaxWaiters: 65536,
			QueueMaxBatch: MiB,
		},
		Consume: Consume{
			Sink: "awsiot", Pollers: 4, BatchSize: 1000, VisibilityTimeout: 60 * time.Second,
			WaitTime: 20 * time.Second, BatchWait: 250 * time.Millisecond, StopTimeout: 15 * time.Second,
		},
		IoT: IoT{ThingCacheSize: 100_000, ThingCacheBytes: 64 * MiB, Concurrency: 32, Consumers: 1, CreateThingRate: 100},
		HTTP: HTTP{Addr: "127.0.0.1:8080", ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second,
			IdleTimeout: 60 * time.Second, MaxConns: 256},
		Log:      Log{Level: "info", Format: "text"},
		Compat:   Compat{Device: "off", Envelope: "coapgw"},
		EMF:      EMF{Namespace: "coapgw"},
		Downlink: defaultDownlink(),
	}
}

// EnvName is the environment variable for a flag name.
func EnvName(flagName string) string {
	return "COAPGW_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// yamlKey is the config file key for a flag name.
func yamlKey(flagName string) string { return strings.ReplaceAll(flagName, "-", "_") }

// Loaded is the result of parsing a command line.
type Loaded struct {
	Config     Config
	CheckOnly  bool   // --check-config: validate and exit
	ConfigFile string // --config, if any
	Args       []string
}

// Load builds role's configuration from the defaults, the optional file (--config or
// COAPGW_CONFIG), the environment and the flags in args, in that order of precedence (flags
// win). name is the command's name for messages and usage its description for -h (may be
// empty). It reports every malformed value at once, and then still returns the configuration
// (those settings keep their earlier value) so that Validate can add its problems to the list;
// only a command line it cannot parse (or -h: flag.ErrHelp) returns a nil *Loaded.
func Load(role Role, name, usage string, args []string, getenv func(string) string, stderr io.Writer) (*Loaded, error) {
	l := &Loaded{Config: Default()}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	// Flags are parsed into a scratch Config so that file and environment can be applied first.
	// The scratch copy starts from the defaults, so -h shows them.
	scratch := Default()
	opts := scratch.options(role)
	for _, o := range opts {
		help := o.helpFor(role) + " (env " + EnvName(o.name) + ")"
		switch p := o.ptr.(type) { // the flag package's own types, so that -h names them
		case *string:
			fs.StringVar(p, o.name, *p, help)
		case *int:
			fs.IntVar(p, o.name, *p, help)
		case *bool:
			fs.BoolVar(p, o.name, *p, help)
		case *time.Duration:
			fs.DurationVar(p, o.name, *p, help)
		default:
			fs.Var(&value{p: o.ptr}, o.name, strings.Replace(help, " (env ", ", a `size` in bytes or with a unit (env ", 1))
		}
	}
	fs.StringVar(&l.ConfigFile, "config", getenv("COAPGW_CONFIG"), "YAML config file, flat snake_case keys (env COAPGW_CONFIG)")
	fs.BoolVar(&l.CheckOnly, "check-config", false, "validate the configuration, print every problem or the effective settings, and exit")
	if usage != "" {
		fs.Usage = func() {
			fmt.Fprint(stderr, usage)
			fs.PrintDefaults()
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	l.Args = fs.Args()
	target := l.Config.options(role)
	var errs []error
	if l.ConfigFile != "" {
		if err := l.Config.loadFile(l.ConfigFile, target); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, applyEnv(target, getenv)...)
	l.Config.secretsFromEnv(role, getenv)
	fs.Visit(func(f *flag.Flag) {
		for i, o := range opts {
			if o.name == f.Name {
				copyValue(target[i].ptr, o.ptr)
			}
		}
	})
	return l, errors.Join(errs...)
}

// FromEnv builds role's configuration from the defaults and the COAPGW_* environment only (the
// Lambda has no command line). Validate checks the result.
func FromEnv(role Role, getenv func(string) string) (Config, error) {
	c := Default()
	err := errors.Join(applyEnv(c.options(role), getenv)...)
	c.secretsFromEnv(role, getenv)
	return c, err
}

// secretsFromEnv takes key text that only the environment may hold (COAPGW_KEY,
// COAPGW_FLEET_KEY): a flag would show it in the process list, a file key in --check-config.
func (c *Config) secretsFromEnv(role Role, getenv func(string) string) {
	if role == Serve {
		c.Credentials.Key = getenv("COAPGW_KEY")
		c.Credentials.FleetKey = getenv("COAPGW_FLEET_KEY")
	}
}

func applyEnv(opts []option, getenv func(string) string) []error {
	var errs []error
	for _, o := range opts {
		if v := getenv(EnvName(o.name)); v != "" {
			if err := set(o.ptr, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", EnvName(o.name), err))
			}
		}
	}
	return errs
}

// loadFile applies a flat YAML file: one key per option (the flag name in snake_case). Unknown
// keys and malformed values are reported all together.
func (c *Config) loadFile(path string, opts []option) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("config %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	m := doc.Content[0]
	if m.Kind == yaml.ScalarNode && m.Tag == "!!null" {
		return nil
	}
	if m.Kind != yaml.MappingNode {
		return fmt.Errorf("config %s: want a mapping of settings", path)
	}
	byKey := make(map[string]option, len(opts))
	for _, o := range opts {
		byKey[yamlKey(o.name)] = o
	}
	var errs []error
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		o, ok := byKey[k.Value]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("config %s line %d: unknown key %q", path, k.Line, k.Value))
			continue
		case seen[k.Value]:
			errs = append(errs, fmt.Errorf("config %s line %d: %s given twice", path, k.Line, k.Value))
			continue
		case v.Kind != yaml.ScalarNode:
			errs = append(errs, fmt.Errorf("config %s line %d: %s: want a single value", path, k.Line, k.Value))
			continue
		}
		seen[k.Value] = true
		if v.Tag == "!!null" {
			continue // `key:` with nothing keeps the default
		}
		if err := set(o.ptr, v.Value); err != nil {
			errs = append(errs, fmt.Errorf("config %s line %d: %s: %w", path, k.Line, k.Value, err))
		}
	}
	return errors.Join(errs...)
}

// WriteYAML prints role's effective settings as a flat YAML file that Load reads back.
func (c *Config) WriteYAML(w io.Writer, role Role) error {
	m := &yaml.Node{Kind: yaml.MappingNode}
	for _, o := range c.options(role) {
		v := (&value{p: o.ptr}).String()
		n := &yaml.Node{Kind: yaml.ScalarNode, Value: v}
		if _, isString := o.ptr.(*string); isString {
			n.Tag = "!!str" // keeps "" and "on" strings
		}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: yamlKey(o.name)}, n)
	}
	enc := yaml.NewEncoder(w)
	defer enc.Close()
	return enc.Encode(m)
}
