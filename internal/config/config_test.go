package config

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func load(t *testing.T, role Role, args []string, e map[string]string) (*Loaded, error) {
	t.Helper()
	return Load(role, "t", "", args, env(e), io.Discard)
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestDefaults(t *testing.T) {
	for _, role := range []Role{Serve, Process} {
		l, err := load(t, role, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		c := l.Config
		if c.CoAP.Addr != ":5683" || c.HTTP.Addr != "127.0.0.1:8080" || c.Spool.DataDir != "./data" || c.Ingest.MaxPayload != 8192 ||
			c.Spool.MaxBytes != 1<<30 || c.Spool.SegmentBytes != 64<<20 || c.CoAP.SocketBuffer != 8<<20 ||
			c.Local.MaxThings != 100_000 || c.Local.HistoryMaxBytes != 8<<30 || c.Local.MaxSetAside != 10_000 ||
			c.Ingest.DeviceRateDevices != 1_000_000 {
			t.Fatalf("defaults: %+v", c)
		}
		err = c.Validate(role)
		if role == Serve && err != nil {
			t.Fatalf("serve defaults invalid: %v", err)
		}
		if role == Process && (err == nil || !strings.Contains(err.Error(), "queue is required")) {
			t.Fatalf("process without a queue: %v", err)
		}
	}
	c, err := FromEnv(Lambda, env(nil))
	if err != nil || c.Validate(Lambda) != nil || c.IoT.ThingCacheSize != 100_000 || c.IoT.Concurrency != 32 {
		t.Fatalf("lambda defaults: %+v %v", c.IoT, err)
	}
}

func TestPrecedenceFileEnvFlag(t *testing.T) {
	f := writeFile(t, "coap_addr: 127.0.0.1:1\nhttp_addr: 127.0.0.1:2\ndata_dir: /file\nretry_after: 7s\n")
	l, err := load(t, Serve, []string{"--config", f, "--data-dir", "/flag"},
		map[string]string{"COAPGW_HTTP_ADDR": "127.0.0.1:3", "COAPGW_DATA_DIR": "/env"})
	if err != nil {
		t.Fatal(err)
	}
	c := l.Config
	if c.CoAP.Addr != "127.0.0.1:1" || c.HTTP.Addr != "127.0.0.1:3" || c.Spool.DataDir != "/flag" || c.Ingest.RetryAfter != 7*time.Second {
		t.Fatalf("got %+v", c)
	}
}

func TestEnvNames(t *testing.T) {
	for flag, want := range map[string]string{"coap-addr": "COAPGW_COAP_ADDR", "http-addr": "COAPGW_HTTP_ADDR", "data-dir": "COAPGW_DATA_DIR"} {
		if got := EnvName(flag); got != want {
			t.Errorf("%s: %s, want %s", flag, got, want)
		}
	}
	l, err := load(t, Serve, nil, map[string]string{"COAPGW_COAP_ADDR": "[::1]:9", "COAPGW_MAX_PAYLOAD": "100"})
	if err != nil || l.Config.CoAP.Addr != "[::1]:9" || l.Config.Ingest.MaxPayload != 100 {
		t.Fatalf("%v %+v", err, l)
	}
}

// TestEveryDocumentedSettingLoads: every flag of README's Configuration table and of
// `coapgw process -h` is a flag, an environment variable and a flat YAML key of its role, and the
// Lambda reads its documented variables.
func TestEveryDocumentedSettingLoads(t *testing.T) {
	serve := map[string]string{
		"coap-addr": "127.0.0.1:7", "http-addr": "127.0.0.1:8", "data-dir": "/d", "gateway-id": "gw-9",
		"max-payload": "1000", "retry-after": "9s", "spool-max-bytes": "2GiB", "spool-segment-bytes": "1MiB",
		"shutdown-timeout": "3s", "fail-linger": "1s", "piggyback-deadline": "500ms", "dedup-max-entries": "7", "dedup-per-peer": "3",
		"device-rate": "60", "device-burst": "4", "device-rate-devices": "1000", "process": "none", "processor-batch": "10",
		"history-max-age": "1h", "history-max-points": "5", "max-things": "7", "max-properties": "9",
		"history-max-bytes": "64MiB", "max-set-aside": "9", "queue": "https://sqs.eu-west-1.amazonaws.com/1/q",
		"ack-after": "queue", "queue-ack-timeout": "2s", "coap-sockets": "2", "socket-buffer": "1MiB",
		"log-level": "debug", "log-format": "json", "aws-endpoint": "http://127.0.0.1:5000", "pprof": "true",
		"processor-backoff-min": "1s", "processor-backoff-max": "2s",
		"forward-concurrency": "2", "forward-max-pending": "100", "forward-linger": "-1ms", "forward-backoff-base": "1s",
		"forward-backoff-max": "5s", "forward-max-rejects": "2", "forward-commit-interval": "1s",
		"forward-shutdown-grace": "1s", "forward-max-waiters": "10", "fifo-queue": "true", "queue-max-batch-bytes": "256KiB",
		"http-read-timeout": "5s", "http-write-timeout": "7s", "http-idle-timeout": "9s", "http-max-conns": "11",
		"block-size": "256", "blockwise-max-bytes": "1MiB", "blockwise-per-peer": "2", "blockwise-timeout": "30s",
		"compat": "seed", "envelope": "seed", "seed-shadow": "true",
	}
	process := map[string]string{
		"queue": "https://sqs.eu-west-1.amazonaws.com/1/q", "sink": "awsiot", "publish-topic": "t/{thing}",
		"iot-data-endpoint": "x.iot.eu-west-1.amazonaws.com", "aws-endpoint": "http://127.0.0.1:5000",
		"http-addr": "127.0.0.1:8", "log-level": "warn", "log-format": "json", "pollers": "2", "batch-size": "10",
		"thing-cache-size": "5", "iot-concurrency": "3", "visibility-timeout": "30s", "wait-time": "1s",
		"batch-wait": "10ms", "stop-timeout": "2s", "thing-cache-bytes": "8MiB", "fifo-queue": "true", "adopt-things": "true",
		"seed-shadow":   "true",
		"iot-consumers": "4", "iot-create-thing-rate": "50", "publish-pack": "true",
	}
	for role, settings := range map[Role]map[string]string{Serve: serve, Process: process} {
		var args []string
		envs := map[string]string{}
		var file strings.Builder
		for k, v := range settings {
			args = append(args, "--"+k+"="+v)
			envs[EnvName(k)] = v
			file.WriteString(strings.ReplaceAll(k, "-", "_") + ": " + "'" + v + "'\n")
		}
		fromFlags, err1 := load(t, role, args, nil)
		fromEnv, err2 := load(t, role, nil, envs)
		fromFile, err3 := load(t, role, []string{"--config", writeFile(t, file.String())}, nil)
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("%v: %v / %v / %v", role, err1, err2, err3)
		}
		if fromFlags.Config != fromEnv.Config || fromFlags.Config != fromFile.Config {
			t.Fatalf("%v: flags, environment and file disagree:\n%+v\n%+v\n%+v", role, fromFlags.Config, fromEnv.Config, fromFile.Config)
		}
		if err := fromFlags.Config.Validate(role); err != nil {
			t.Fatalf("%v: %v", role, err)
		}
		if fromFlags.Config == Default() {
			t.Fatalf("%v: nothing set", role)
		}
	}
	c, err := FromEnv(Lambda, env(map[string]string{"COAPGW_PUBLISH_TOPIC": "t/{type}", "COAPGW_IOT_DATA_ENDPOINT": "x.example",
		"COAPGW_THING_CACHE_SIZE": "500", "COAPGW_IOT_CONCURRENCY": "8", "COAPGW_LOG_LEVEL": "debug", "COAPGW_AWS_ENDPOINT": "http://127.0.0.1:1",
		"COAPGW_IOT_CONSUMERS": "20"}))
	if err != nil || c.IoT != (IoT{PublishTopic: "t/{type}", DataEndpoint: "x.example", ThingCacheSize: 500, ThingCacheBytes: 64 * MiB, Concurrency: 8, Consumers: 20, CreateThingRate: 100}) ||
		c.Log.Level != "debug" || c.AWS.Endpoint != "http://127.0.0.1:1" {
		t.Fatalf("lambda: %+v %v", c, err)
	}
}

func TestWriteYAMLRoundTrip(t *testing.T) {
	l, err := load(t, Serve, []string{"--spool-max-bytes", "512MiB", "--gateway-id", "on", "--forward-linger", "-1ms"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := l.Config.WriteYAML(&buf, Serve); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"spool_max_bytes: 512MiB\n", "socket_buffer: 8MiB\n", "max_payload: 8KiB\n", "coap_addr: :5683\n"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("--check-config output lacks %q:\n%s", want, buf.String())
		}
	}
	back, err := load(t, Serve, []string{"--config", writeFile(t, buf.String())}, nil)
	if err != nil || back.Config != l.Config {
		t.Fatalf("round trip: %v\n%+v\n%+v", err, back, l.Config)
	}
}

func TestSizeUnits(t *testing.T) {
	for in, want := range map[string]Size{
		"1GiB": 1 << 30, "8MiB": 8 << 20, "64KiB": 64 << 10, "65536": 65536, "2 MiB": 2 << 20, "8kib": 8 << 10,
		"1KB": 1000, "3MB": 3_000_000, "1GB": 1_000_000_000, "100B": 100, "1TiB": 1 << 40,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "1.5GiB", "-1", "8 bananas", "1XB", "99999999999TiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	for s, want := range map[Size]string{GiB: "1GiB", 3 * MiB: "3MiB", 1000: "1000", 0: "0", 1536: "1536", 2 * KiB: "2KiB"} {
		if s.String() != want {
			t.Errorf("%d prints %q, want %q", int64(s), s.String(), want)
		}
	}
	// As the README writes them, from each source.
	f := writeFile(t, "spool_max_bytes: 1GiB\nspool_segment_bytes: 64MiB\n")
	l, err := load(t, Serve, []string{"--config", f, "--socket-buffer", "4MiB"}, map[string]string{"COAPGW_MAX_PAYLOAD": "4KiB"})
	if err != nil {
		t.Fatal(err)
	}
	if c := l.Config; c.Spool.MaxBytes != 1<<30 || c.Spool.SegmentBytes != 64<<20 || c.CoAP.SocketBuffer != 4<<20 || c.Ingest.MaxPayload != 4096 {
		t.Fatalf("sizes: %+v %+v %+v", c.Spool, c.CoAP, c.Ingest)
	}
	if _, err := load(t, Serve, []string{"--spool-max-bytes", "lots"}, nil); err == nil {
		t.Fatal("a size that is not one accepted")
	}
}

func TestBadValues(t *testing.T) {
	if _, err := load(t, Serve, nil, map[string]string{"COAPGW_MAX_PAYLOAD": "lots"}); err == nil || !strings.Contains(err.Error(), "COAPGW_MAX_PAYLOAD") {
		t.Fatalf("bad env value: %v", err)
	}
	if _, err := load(t, Serve, []string{"--retry-after", "soon"}, nil); err == nil {
		t.Fatal("bad flag value accepted")
	}
	if _, err := load(t, Serve, []string{"--config", writeFile(t, "coap_adr: x\n")}, nil); err == nil {
		t.Fatal("misspelled key accepted")
	}
	if _, err := load(t, Process, []string{"--config", writeFile(t, "coap_addr: :1\n")}, nil); err == nil {
		t.Fatal("a serve key accepted by process")
	}
	// Malformed values of every source are reported together.
	_, err := load(t, Serve, []string{"--config", writeFile(t, "max_payload: big\nretry_after: never\nnope: 1\n")},
		map[string]string{"COAPGW_SOCKET_BUFFER": "huge"})
	for _, want := range []string{"max_payload", "retry_after", "nope", "COAPGW_SOCKET_BUFFER"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("load does not report %s: %v", want, err)
		}
	}
	// What could be read is still returned, for Validate to add its problems.
	l, err := load(t, Serve, []string{"--config", writeFile(t, "max_payload: big\ncoap_addr: ':99999'\n")}, nil)
	if err == nil || l == nil || l.Config.CoAP.Addr != ":99999" || l.Config.Ingest.MaxPayload != 8192 {
		t.Fatalf("partial load: %v %+v", err, l)
	}
	c := Default()
	c.Ingest.MaxPayload, c.Log.Level, c.CoAP.PiggybackDeadline = 0, "loud", 3*time.Second
	c.Local.MaxThings, c.Local.MaxProperties = -1, -1
	c.Local.HistoryMaxBytes, c.Local.MaxSetAside, c.Ingest.DeviceRateDevices = 4096, 0, 10
	err = c.Validate(Serve)
	for _, want := range []string{"max-payload", "log-level", "piggyback-deadline", "max-things", "max-properties", "history-max-bytes 4KiB",
		"max-set-aside 0", "device-rate-devices 10"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate does not report %s: %v", want, err)
		}
	}
}

// TestValidateReportsEverything: a file with several bad values, for each role, is reported
// problem by problem, including addresses that cannot be bound and durations that cannot work.
func TestValidateReportsEverything(t *testing.T) {
	cases := []struct {
		role Role
		file string
		want []string
	}{
		{Serve, "coap_addr: ':99999'\nhttp_addr: nosuchhost.invalid:8080\npiggyback_deadline: 1ns\n",
			[]string{`coap-addr ":99999": port 99999 is out of range`, `http-addr "nosuchhost.invalid:8080": host "nosuchhost.invalid" does not resolve`, "piggyback-deadline 1ns"}},
		{Serve, "coap_addr: '5683'\nspool_max_bytes: 64KiB\nspool_segment_bytes: 1MiB\nforward_backoff_base: 0s\nprocessor_backoff_max: 1ms\n",
			[]string{"coap-addr", "spool-max-bytes 64KiB", "forward-backoff-base", "processor-backoff-max"}},
		{Serve, "http_read_timeout: 0s\nhttp_write_timeout: -1s\nhttp_idle_timeout: 0s\nhttp_max_conns: 0\n",
			[]string{"http-read-timeout 0s", "http-write-timeout -1s", "http-idle-timeout 0s", "http-max-conns 0"}},
		{Serve, "max_payload: 65537\nblock_size: 48\nblockwise_max_bytes: 8KiB\nblockwise_per_peer: 0\nblockwise_timeout: 0s\n",
			[]string{"max-payload 65537: want 1–65536", "block-size 48: want a power of two", "blockwise-max-bytes 8KiB", "blockwise-per-peer 0", "blockwise-timeout"}},
		{Serve, "fleet_key_file: /k\ndtls_recheck_interval: 10ms\n", []string{"dtls-recheck-interval 10ms: want 100ms–1m"}},
		{Serve, "fleet_key_file: /k\ndtls_recheck_interval: 2m\n", []string{"dtls-recheck-interval 2m0s: want 100ms–1m"}},
		{Serve, "compat: get\nenvelope: seed\n", []string{`compat "get": want off or seed`, "envelope seed needs --queue"}},
		{Serve, "envelope: v2\n", []string{`envelope "v2": want coapgw or seed`}},
		{Process, "queue: nope\npollers: 0\nhttp_addr: ':70000'\nvisibility_timeout: 1s\n",
			[]string{`queue "nope"`, "pollers 0", `http-addr ":70000": port 70000`, "visibility-timeout 1s"}},
	}
	for _, tc := range cases {
		l, err := load(t, tc.role, []string{"--config", writeFile(t, tc.file)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = l.Config.Validate(tc.role)
		for _, want := range tc.want {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%v: %q not reported in:\n%v", tc.role, want, err)
			}
		}
	}
	// The largest payload block-wise transfer takes, and the smallest block, are accepted.
	big := Default()
	big.Ingest.MaxPayload, big.CoAP.BlockSize = 64*KiB, 16
	if err := big.Validate(Serve); err != nil {
		t.Errorf("max-payload 64KiB, block-size 16: %v", err)
	}
	// The shortest piggyback deadline the exchange layer works with is accepted, and a port 0
	// (any free port) or a service name is fine.
	c := Default()
	c.CoAP.PiggybackDeadline, c.CoAP.Addr, c.HTTP.Addr = time.Millisecond, "127.0.0.1:0", "localhost:http"
	if err := c.Validate(Serve); err != nil {
		t.Fatal(err)
	}
}
