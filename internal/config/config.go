// Package config holds coapgw's settings: one typed struct with defaults, filled from an optional
// YAML file, then COAPGW_* environment variables, then command-line flags (later wins), and
// validated all at once.
//
// Every setting has a flag and an environment variable; the table in options() is the single list.
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is every setting of the gateway.
type Config struct {
	CoAPAddr  string `yaml:"coap_addr"`
	HTTPAddr  string `yaml:"http_addr"`
	DataDir   string `yaml:"data_dir"`
	GatewayID string `yaml:"gateway_id"`
	LogLevel  string `yaml:"log_level"`
	LogFormat string `yaml:"log_format"`

	MaxPayload      int           `yaml:"max_payload"`
	RetryAfter      time.Duration `yaml:"retry_after"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	SpoolMaxBytes     int64 `yaml:"spool_max_bytes"`
	SpoolSegmentBytes int64 `yaml:"spool_segment_bytes"`

	CoAPSockets       int           `yaml:"coap_sockets"`
	SocketBuffer      int           `yaml:"socket_buffer"`
	PiggybackDeadline time.Duration `yaml:"piggyback_deadline"`
	DedupMaxEntries   int           `yaml:"dedup_max_entries"`
	DedupPerPeer      int           `yaml:"dedup_per_peer"`
	DeviceRate        int           `yaml:"device_rate"`
	DeviceBurst       int           `yaml:"device_burst"`

	Process          string        `yaml:"process"`
	Queue            string        `yaml:"queue"`
	AckAfter         string        `yaml:"ack_after"`
	QueueAckTimeout  time.Duration `yaml:"queue_ack_timeout"`
	AWSEndpoint      string        `yaml:"aws_endpoint"`
	ProcessorBatch   int           `yaml:"processor_batch"`
	HistoryMaxAge    time.Duration `yaml:"history_max_age"`
	HistoryMaxPoints int           `yaml:"history_max_points"`
	Pprof            bool          `yaml:"pprof"`
}

// Default returns the configuration used when nothing is set: local mode on :5683 and :8080.
func Default() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "coapgw"
	}
	return Config{
		CoAPAddr:          ":5683",
		HTTPAddr:          ":8080",
		DataDir:           "./data",
		GatewayID:         host,
		LogLevel:          "info",
		LogFormat:         "text",
		MaxPayload:        8192,
		RetryAfter:        5 * time.Second,
		ShutdownTimeout:   10 * time.Second,
		SpoolMaxBytes:     1 << 30,
		SpoolSegmentBytes: 64 << 20,
		CoAPSockets:       1,
		SocketBuffer:      8 << 20,
		PiggybackDeadline: time.Second,
		DedupMaxEntries:   500_000,
		DedupPerPeer:      1024,
		DeviceBurst:       10,
		Process:           "local",
		AckAfter:          "spool",
		QueueAckTimeout:   3 * time.Second,
		ProcessorBatch:    20000,
		HistoryMaxAge:     7 * 24 * time.Hour,
		HistoryMaxPoints:  1000,
	}
}

type option struct {
	name string // flag name; the environment variable is COAPGW_ + upper snake case
	help string
	ptr  any // *string, *int, *int64, *bool, *time.Duration
}

func (c *Config) options() []option {
	return []option{
		{"coap-addr", "UDP address for CoAP", &c.CoAPAddr},
		{"http-addr", "TCP address for the dashboard, /api, /metrics, /healthz, /readyz (empty disables)", &c.HTTPAddr},
		{"data-dir", "directory for the spool", &c.DataDir},
		{"gateway-id", "this gateway's name in every record (default: hostname)", &c.GatewayID},
		{"log-level", "debug, info, warn or error", &c.LogLevel},
		{"log-format", "text or json", &c.LogFormat},
		{"max-payload", "largest telemetry payload in bytes; larger gets 4.13", &c.MaxPayload},
		{"retry-after", "Max-Age sent with 5.03 (whole seconds)", &c.RetryAfter},
		{"shutdown-timeout", "how long SIGTERM waits for in-flight requests", &c.ShutdownTimeout},
		{"spool-max-bytes", "spool size cap; when full, devices get 5.03", &c.SpoolMaxBytes},
		{"spool-segment-bytes", "spool segment file size", &c.SpoolSegmentBytes},
		{"coap-sockets", "SO_REUSEPORT sockets (one reader each)", &c.CoAPSockets},
		{"socket-buffer", "SO_RCVBUF/SO_SNDBUF bytes", &c.SocketBuffer},
		{"piggyback-deadline", "send an empty ACK and a separate response after this", &c.PiggybackDeadline},
		{"dedup-max-entries", "global cap on remembered (peer, MID) pairs", &c.DedupMaxEntries},
		{"dedup-per-peer", "per-peer cap on remembered (peer, MID) pairs", &c.DedupPerPeer},
		{"device-rate", "records a minute each device (type/id) may send; beyond: 5.03 + Max-Age (CON), dropped (NON); 0 = no limit", &c.DeviceRate},
		{"device-burst", "records a device may send at once above its --device-rate", &c.DeviceBurst},
		{"process", "local: apply records to the embedded registry and serve the dashboard; none: only ingest into the spool", &c.Process},
		{"queue", "SQS queue URL: forward the spool to it (the AWS pipeline) instead of processing locally", &c.Queue},
		{"ack-after", "spool: 2.04 after the fsync; queue: 2.04 only after SQS accepted the record (needs --queue)", &c.AckAfter},
		{"queue-ack-timeout", "with --ack-after=queue: answer 5.03 if SQS has not accepted a record by then", &c.QueueAckTimeout},
		{"aws-endpoint", "base URL for the AWS APIs (tests against an emulator only)", &c.AWSEndpoint},
		{"processor-batch", "most records the local processor applies in one transaction", &c.ProcessorBatch},
		{"history-max-age", "telemetry history older than this is dropped", &c.HistoryMaxAge},
		{"history-max-points", "telemetry history kept per thing (records with numeric properties)", &c.HistoryMaxPoints},
		{"pprof", "serve /debug/pprof/ on the HTTP address (for profiling; keep the port private)", &c.Pprof},
	}
}

// EnvName is the environment variable for a flag name.
func EnvName(flagName string) string {
	return "COAPGW_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Loaded is the result of parsing a command line.
type Loaded struct {
	Config     Config
	CheckOnly  bool   // --check-config: validate and exit
	ConfigFile string // --config, if any
	Args       []string
}

// Load builds the configuration from defaults, the optional file (--config or COAPGW_CONFIG),
// the environment and the flags in args, in that order of precedence (flags win).
func Load(name string, args []string, getenv func(string) string, stderr io.Writer) (*Loaded, error) {
	l := &Loaded{Config: Default()}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	// Flags are parsed into a scratch Config so that file and environment can be applied first.
	// The scratch copy starts from the defaults, so -h shows them.
	scratch := Default()
	opts := scratch.options()
	for _, o := range opts {
		fs.Var(&anyValue{p: o.ptr}, o.name, o.help+" (env "+EnvName(o.name)+")")
	}
	fs.StringVar(&l.ConfigFile, "config", getenv("COAPGW_CONFIG"), "YAML config file (env COAPGW_CONFIG)")
	fs.BoolVar(&l.CheckOnly, "check-config", false, "validate the configuration, print it and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	l.Args = fs.Args()
	if l.ConfigFile != "" {
		data, err := os.ReadFile(l.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&l.Config); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("config %s: %w", l.ConfigFile, err)
		}
	}
	target := l.Config.options()
	var errs []error
	for i, o := range opts {
		if v := getenv(EnvName(o.name)); v != "" {
			if err := set(target[i].ptr, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", EnvName(o.name), err))
			}
		}
	}
	fs.Visit(func(f *flag.Flag) {
		for i, o := range opts {
			if o.name == f.Name {
				copyValue(target[i].ptr, o.ptr)
			}
		}
	})
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return l, nil
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.CoAPAddr == "" {
		bad("coap-addr must not be empty")
	}
	if c.DataDir == "" {
		bad("data-dir must not be empty")
	}
	if c.GatewayID == "" || len(c.GatewayID) > 128 {
		bad("gateway-id must be 1–128 bytes")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log-format %q: want text or json", c.LogFormat)
	}
	if c.MaxPayload < 1 || c.MaxPayload > 60000 {
		bad("max-payload %d: want 1–60000 bytes", c.MaxPayload)
	}
	if c.RetryAfter < time.Second || c.RetryAfter > time.Hour {
		bad("retry-after %s: want 1s–1h", c.RetryAfter)
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown-timeout must be positive")
	}
	if c.SpoolSegmentBytes < 1<<16 {
		bad("spool-segment-bytes %d: want at least 64 KiB", c.SpoolSegmentBytes)
	}
	if c.SpoolMaxBytes < c.SpoolSegmentBytes {
		bad("spool-max-bytes %d: want at least spool-segment-bytes", c.SpoolMaxBytes)
	}
	if c.CoAPSockets < 1 || c.CoAPSockets > 64 {
		bad("coap-sockets %d: want 1–64", c.CoAPSockets)
	}
	if c.SocketBuffer < 1<<16 {
		bad("socket-buffer %d: want at least 64 KiB", c.SocketBuffer)
	}
	if c.PiggybackDeadline <= 0 || c.PiggybackDeadline >= 2*time.Second {
		bad("piggyback-deadline %s: want more than 0 and less than ACK_TIMEOUT (2s)", c.PiggybackDeadline)
	}
	if c.Process != "local" && c.Process != "none" {
		bad("process %q: want local or none", c.Process)
	}
	if c.AckAfter != "spool" && c.AckAfter != "queue" {
		bad("ack-after %q: want spool or queue", c.AckAfter)
	}
	if c.QueueAckTimeout <= 0 {
		bad("queue-ack-timeout must be positive")
	}
	if c.AckAfter == "queue" && c.Queue == "" {
		bad("ack-after queue needs --queue")
	}
	if c.Queue != "" && !strings.HasPrefix(c.Queue, "https://") && !strings.HasPrefix(c.Queue, "http://") {
		bad("queue %q: want the queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)", c.Queue)
	}
	if c.DeviceRate < 0 || c.DeviceRate > 1_000_000 {
		bad("device-rate %d: want 0 (no limit) to 1000000 records a minute", c.DeviceRate)
	}
	if c.DeviceBurst < 1 || c.DeviceBurst > 1_000_000 {
		bad("device-burst %d: want 1–1000000", c.DeviceBurst)
	}
	if c.ProcessorBatch < 1 || c.ProcessorBatch > 100_000 {
		bad("processor-batch %d: want 1–100000", c.ProcessorBatch)
	}
	if c.HistoryMaxAge < time.Minute {
		bad("history-max-age %s: want at least 1m", c.HistoryMaxAge)
	}
	if c.HistoryMaxPoints < 1 {
		bad("history-max-points must be positive")
	}
	if c.DedupMaxEntries < 1 || c.DedupPerPeer < 1 {
		bad("dedup-max-entries and dedup-per-peer must be positive")
	}
	return errors.Join(errs...)
}

// WriteYAML prints the effective configuration.
func (c *Config) WriteYAML(w io.Writer) error {
	enc := yaml.NewEncoder(w)
	defer enc.Close()
	return enc.Encode(c)
}

// anyValue adapts a typed field pointer to flag.Value.
type anyValue struct{ p any }

func (v *anyValue) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	switch p := v.p.(type) {
	case *string:
		return *p
	case *int:
		return strconv.Itoa(*p)
	case *int64:
		return strconv.FormatInt(*p, 10)
	case *bool:
		return strconv.FormatBool(*p)
	case *time.Duration:
		return p.String()
	}
	return ""
}

// IsBoolFlag lets a boolean setting be given as a bare --flag.
func (v *anyValue) IsBoolFlag() bool { _, ok := v.p.(*bool); return ok }

func (v *anyValue) Set(s string) error { return set(v.p, s) }

func set(p any, s string) error {
	switch p := p.(type) {
	case *string:
		*p = s
	case *int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		*p = n
	case *int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		*p = n
	case *bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		*p = b
	case *time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration like 5s", s)
		}
		*p = d
	}
	return nil
}

func copyValue(dst, src any) {
	switch d := dst.(type) {
	case *string:
		*d = *src.(*string)
	case *int:
		*d = *src.(*int)
	case *int64:
		*d = *src.(*int64)
	case *bool:
		*d = *src.(*bool)
	case *time.Duration:
		*d = *src.(*time.Duration)
	}
}
