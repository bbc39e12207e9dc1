package config

// option is one setting: its flag name (the environment variable and the YAML key derive from
// it), the roles that have it, its help and the field it sets.
type option struct {
	name  string
	roles Role
	help  string
	// roleHelp, if set, replaces help for roles where the setting means something more specific.
	roleHelp map[Role]string
	ptr      any // *string, *int, *bool, *time.Duration, *Size
}

func (o option) helpFor(r Role) string {
	if h, ok := o.roleHelp[r]; ok {
		return h
	}
	return o.help
}

const (
	sp  = Serve
	pr  = Process
	all = Serve | Process | Lambda
)

// options is the table of every setting, in the order -h and --check-config list them, bound to
// c's fields; only those of role are returned.
func (c *Config) options(role Role) []option {
	table := []option{
		// CoAP server
		{name: "coap-addr", roles: sp, help: "UDP address for CoAP", ptr: &c.CoAP.Addr},
		{name: "http-addr", roles: sp | pr, help: "TCP address for the operations server: /metrics, /healthz, /readyz (empty disables)",
			roleHelp: map[Role]string{Serve: "TCP address for the dashboard, /api, /metrics, /healthz, /readyz (empty disables; off loopback the API needs the token)"}, ptr: &c.HTTP.Addr},
		{name: "http-read-timeout", roles: sp | pr, help: "an HTTP request's headers and body must arrive within this", ptr: &c.HTTP.ReadTimeout},
		{name: "http-write-timeout", roles: sp | pr, help: "writing an HTTP response may take this long (the event stream: each event)", ptr: &c.HTTP.WriteTimeout},
		{name: "http-idle-timeout", roles: sp | pr, help: "a keep-alive HTTP connection waiting for its next request is closed after this", ptr: &c.HTTP.IdleTimeout},
		{name: "http-max-conns", roles: sp | pr, help: "HTTP connections open at once; more wait in the listen backlog (lowered to what RLIMIT_NOFILE leaves after a reserve for the spool)", ptr: &c.HTTP.MaxConns},
		{name: "data-dir", roles: sp, help: "directory for the spool (and the local registry)", ptr: &c.Spool.DataDir},
		{name: "gateway-id", roles: sp, help: "this gateway's name in every record (the host's name unless set)", ptr: &c.Ingest.GatewayID},
		{name: "log-level", roles: all, help: "debug, info, warn or error", ptr: &c.Log.Level},
		{name: "log-format", roles: sp | pr, help: "text or json", ptr: &c.Log.Format},
		{name: "emf-interval", roles: sp, help: "write the stage lag and spool depth as CloudWatch embedded metric format (EMF) every this often (0: off)", ptr: &c.EMF.Interval},
		{name: "emf-addr", roles: sp, help: "where EMF documents go: empty for the log stream (stderr), tcp://host:port or udp://host:port for the CloudWatch agent (its default is tcp://127.0.0.1:25888)", ptr: &c.EMF.Addr},
		{name: "emf-namespace", roles: sp, help: "CloudWatch namespace of the EMF metrics", ptr: &c.EMF.Namespace},
		{name: "emf-log-group", roles: sp, help: "CloudWatch Logs group the agent puts EMF documents in (empty: the agent's default)", ptr: &c.EMF.LogGroup},
		{name: "max-payload", roles: sp, help: "largest telemetry payload, in one datagram or block-wise (Block1); larger gets 4.13 (at most 64KiB)", ptr: &c.Ingest.MaxPayload},
		{name: "retry-after", roles: sp, help: "Max-Age sent with 5.03 (whole seconds)", ptr: &c.Ingest.RetryAfter},
		{name: "shutdown-timeout", roles: sp, help: "how long SIGTERM waits for in-flight requests", ptr: &c.CoAP.ShutdownTimeout},
		{name: "fail-linger", roles: sp, help: "when a component dies (the local processor's store, the forwarder): how long /readyz answers 503 and devices 5.03 before the gateway shuts down and exits 1 (0: at once)", ptr: &c.CoAP.FailLinger},
		{name: "ready-max-lag", roles: sp, help: "/readyz answers 503 while the stage after the spool (the SQS forwarder, the local processor) is further behind than this: failing or too slow; devices keep getting 2.04 while the spool takes their records (0: never)", ptr: &c.CoAP.ReadyMaxLag},
		{name: "spool-max-bytes", roles: sp, help: "spool size cap; when full, devices get 5.03", ptr: &c.Spool.MaxBytes},
		{name: "spool-segment-bytes", roles: sp, help: "spool segment file size", ptr: &c.Spool.SegmentBytes},
		{name: "coap-sockets", roles: sp, help: "SO_REUSEPORT sockets (one reader each)", ptr: &c.CoAP.Sockets},
		{name: "socket-buffer", roles: sp, help: "SO_RCVBUF/SO_SNDBUF size", ptr: &c.CoAP.SocketBuffer},
		{name: "piggyback-deadline", roles: sp, help: "send an empty ACK and a separate response after this (1ms–2s)", ptr: &c.CoAP.PiggybackDeadline},
		{name: "dedup-max-entries", roles: sp, help: "global cap on remembered (peer, MID) pairs", ptr: &c.CoAP.DedupMaxEntries},
		{name: "dedup-per-peer", roles: sp, help: "per-peer cap on remembered (peer, MID) pairs", ptr: &c.CoAP.DedupPerPeer},
		{name: "block-size", roles: sp, help: "largest block-wise (RFC 7959) block taken without asking for smaller ones, and sent: 16B–1KiB, a power of two", ptr: &c.CoAP.BlockSize},
		{name: "blockwise-max-bytes", roles: sp, help: "memory for request bodies arriving block-wise (Block1), all devices together; when full, the least recently active go first", ptr: &c.CoAP.BlockMaxBytes},
		{name: "blockwise-per-peer", roles: sp, help: "request bodies one device (address or DTLS session) may send block-wise at once; another replaces its least recently active", ptr: &c.CoAP.BlockPerPeer},
		{name: "blockwise-timeout", roles: sp, help: "a block-wise request body with no block for this long is dropped", ptr: &c.CoAP.BlockTimeout},
		{name: "max-observers", roles: sp, help: "devices observing their thing (GET with Observe, local mode) kept per CoAP port, about 760 bytes each; beyond, a GET is answered without Observe", ptr: &c.CoAP.MaxObservers},
		{name: "observe-keepalive", roles: sp, help: "longest an observer goes without a confirmable notification; one unacknowledged removes the observer", ptr: &c.CoAP.ObserveKeepAlive},
		{name: "device-rate", roles: sp, help: "records a minute each device (type/id) may send; beyond: 5.03 + Max-Age (CON), dropped (NON); 0 = no limit", ptr: &c.Ingest.DeviceRate},
		{name: "device-burst", roles: sp, help: "records a device may send at once above its --device-rate", ptr: &c.Ingest.DeviceBurst},
		{name: "device-rate-devices", roles: sp, help: "devices the --device-rate table tracks at most (about 56 bytes of heap each); beyond, a new device goes through unlimited until buckets refill (coapgw_ingest_rate_limit_untracked_total)", ptr: &c.Ingest.DeviceRateDevices},

		// Device identity: DTLS and credentials
		{name: "coaps-addr", roles: sp, help: "UDP address for CoAP over DTLS (PSK); opened only with a credential source (--key-file or a fleet key)", ptr: &c.DTLS.Addr},
		{name: "dtls-max-sessions", roles: sp, help: "established DTLS sessions kept; at the cap the least recently active one goes", ptr: &c.DTLS.MaxSessions},
		{name: "dtls-idle-timeout", roles: sp, help: "a DTLS session without a datagram for this long is closed", ptr: &c.DTLS.IdleTimeout},
		{name: "dtls-hibernate-after", roles: sp, help: "a quiet DTLS session drops the keys derived from its master secret (keeping about 1.3 KB) after this; negative: never", ptr: &c.DTLS.HibernateAfter},
		{name: "dtls-state-file", roles: sp, help: "where a graceful stop saves DTLS sessions and the next start loads them (mode 0600; empty: <data-dir>/dtls-sessions)", ptr: &c.DTLS.StateFile},
		{name: "dtls-max-handshakes", roles: sp, help: "DTLS handshakes in progress at once (each about 24 KB, started only by a ClientHello with a valid cookie); past it, a ClientHello is dropped", ptr: &c.DTLS.MaxHandshakes},
		{name: "dtls-handshake-timeout", roles: sp, help: "a DTLS handshake not finished in this time is dropped", ptr: &c.DTLS.HandshakeTimeout},
		{name: "dtls-recheck-interval", roles: sp, help: "a live DTLS session's key is looked up again at most this often, on its next datagram; a revoked or rotated key ends the session", ptr: &c.DTLS.RecheckInterval},
		{name: "plain-coap", roles: sp, help: "plain CoAP policy: open (any thing), unbound (only things without a credential), off (no plain port); empty: unbound with a credential source, else open", ptr: &c.Credentials.PlainCoAP},
		{name: "key-file", roles: sp, help: "operator key (32 bytes, hex or base64) sealing per-device keys in the local registry; selects per-device keys (or COAPGW_KEY)", ptr: &c.Credentials.KeyFile},
		{name: "fleet-key-file", roles: sp, help: "fleet master key (at least 16 bytes, hex or base64); every device's key is HKDF-SHA256 of it and the identity (or COAPGW_FLEET_KEY)", ptr: &c.Credentials.FleetKeyFile},
		{name: "fleet-key-secret-arn", roles: sp, help: "the fleet master key from this AWS Secrets Manager secret", ptr: &c.Credentials.FleetKeySecretARN},
		{name: "revocation-file", roles: sp, help: "fleet keys: identities refused at handshake, one a line (re-read when it changes)", ptr: &c.Credentials.RevocationFile},

		// Local mode
		{name: "process", roles: sp, help: "local: apply records to the embedded registry and serve the dashboard; none: only ingest into the spool", ptr: &c.Local.Process},
		{name: "processor-batch", roles: sp, help: "most records the local processor applies in one transaction", ptr: &c.Local.Batch},
		{name: "processor-backoff-min", roles: sp, help: "first wait before the local processor retries a failed batch (doubling up to --processor-backoff-max)", ptr: &c.Local.BackoffMin},
		{name: "processor-backoff-max", roles: sp, help: "longest wait between the local processor's retries of a failed batch", ptr: &c.Local.BackoffMax},
		{name: "history-max-age", roles: sp, help: "telemetry history older than this is dropped", ptr: &c.Local.HistoryMaxAge},
		{name: "max-things", roles: sp, help: "local mode: things the registry may hold; a record of a new thing beyond it gets 5.03 + Max-Age \"thing limit reached\" and is not stored; 0 = no cap (ignored with --queue or --process none)", ptr: &c.Local.MaxThings},
		{name: "max-properties", roles: sp, help: "local mode: most properties a thing's reported state may have; a record that would pass it gets 4.13 and is not stored; 0 = no cap (ignored with --queue or --process none)", ptr: &c.Local.MaxProperties},
		{name: "history-max-points", roles: sp, help: "telemetry history kept per thing (records with numeric properties)", ptr: &c.Local.HistoryMaxPoints},
		{name: "history-max-bytes", roles: sp, help: "local mode: the telemetry history's size on disk; beyond it the oldest is dropped (at the other defaults, 3-property devices take about 4.4 GiB); 0 = no cap", ptr: &c.Local.HistoryMaxBytes},
		{name: "max-set-aside", roles: sp, help: "local mode: set-aside records kept for the dashboard; beyond it the oldest are dropped (10000 take at most about 83 MiB with 8 KiB payloads)", ptr: &c.Local.MaxSetAside},
		{name: "http-token-file", roles: sp, help: "file holding the HTTP API's bearer token (writes always need it; reads need it off loopback); empty: generated into <data-dir>/http-token when --http-addr is not loopback or --metrics-auth is set", ptr: &c.HTTP.TokenFile},
		{name: "http-allowed-hosts", roles: sp, help: "extra Host header names (comma-separated) a loopback HTTP server answers to; others get 403 (DNS rebinding)", ptr: &c.HTTP.AllowedHosts},
		{name: "metrics-auth", roles: sp, help: "/metrics needs the HTTP API's bearer token too", ptr: &c.HTTP.MetricsAuth},
		{name: "pprof", roles: sp | pr, help: "serve /debug/pprof/ on the HTTP address (for profiling; keep the port private)", ptr: &c.HTTP.Pprof},

		// AWS
		{name: "queue", roles: sp | pr, help: "SQS queue URL: forward the spool to it (the AWS pipeline) instead of processing locally",
			roleHelp: map[Role]string{Process: "URL of the SQS queue the gateways forward to (required)"}, ptr: &c.AWS.Queue},
		{name: "ack-after", roles: sp, help: "spool: 2.04 after the fsync; queue: 2.04 only after SQS accepted the record (needs --queue)", ptr: &c.Forward.AckAfter},
		{name: "queue-ack-timeout", roles: sp, help: "with --ack-after=queue: answer 5.03 if SQS has not accepted a record by then", ptr: &c.Forward.QueueAckTimeout},
		{name: "fifo-queue", roles: sp, help: "treat the queue as FIFO (per-thing message groups, deduplication ids) even if its URL does not end in .fifo (the same option as process's; was --queue-fifo)", ptr: &c.Forward.QueueFIFO},
		{name: "queue-max-batch-bytes", roles: sp, help: "bytes per SQS SendMessageBatch request (256KiB–1MiB)", ptr: &c.Forward.QueueMaxBatch},
		{name: "iot-downlink-endpoint", roles: sp, help: "with --queue: the account's AWS IoT data endpoint (host[:port], 8883) the gateway subscribes to for shadow deltas over MQTT (empty: no downlink from AWS)", ptr: &c.Downlink.Endpoint},
		{name: "iot-downlink-client-id", roles: sp, help: "MQTT client id the gateway's IoT policy allows (empty: coapgw-<gateway-id>)", ptr: &c.Downlink.ClientID},
		{name: "iot-downlink-cert-file", roles: sp, help: "the gateway's AWS IoT certificate (PEM)", ptr: &c.Downlink.CertFile},
		{name: "iot-downlink-key-file", roles: sp, help: "the gateway's AWS IoT private key (PEM)", ptr: &c.Downlink.KeyFile},
		{name: "iot-downlink-ca-file", roles: sp, help: "CA certificates for the IoT endpoint (PEM; empty: the system's)", ptr: &c.Downlink.CAFile},
		{name: "iot-downlink-cache-bytes", roles: sp, help: "memory for the deltas of the things whose devices asked; beyond it the oldest go (fetched again)", ptr: &c.Downlink.CacheBytes},
		{name: "iot-downlink-fetch-budget", roles: sp, help: "longest a device's answer waits for the GetThingShadow of its first request (0–2s)", ptr: &c.Downlink.FetchBudget},
		{name: "iot-downlink-fetch-rate", roles: sp, help: "GetThingShadow calls a second at most (a device's first request after a start)", ptr: &c.Downlink.FetchRate},
		{name: "iot-downlink-documents", roles: sp, help: "also subscribe to the shadows' update/documents: a report that clears a delta is known at once, but every shadow update of the account is a message to every gateway (billed); off: a pending delta is read again with GetThingShadow 10s after its device's request", ptr: &c.Downlink.Documents},
		{name: "aws-endpoint", roles: all, help: "base URL for every AWS API (tests against an emulator only)", ptr: &c.AWS.Endpoint},

		// Forwarder (serve with --queue)
		{name: "forward-concurrency", roles: sp, help: "SQS calls in flight at once", ptr: &c.Forward.Concurrency},
		{name: "forward-max-pending", roles: sp, help: "records read from the spool and not yet accepted by SQS (memory bound)", ptr: &c.Forward.MaxPending},
		{name: "forward-linger", roles: sp, help: "how long a partial batch waits to fill up (0: never waits)", ptr: &c.Forward.Linger},
		{name: "forward-backoff-base", roles: sp, help: "first retry after a failed SQS call waits up to this", ptr: &c.Forward.BackoffBase},
		{name: "forward-backoff-max", roles: sp, help: "no retry of a failed SQS call waits longer than this", ptr: &c.Forward.BackoffMax},
		{name: "forward-max-rejects", roles: sp, help: "times a record SQS rejects is tried alone before it is dropped", ptr: &c.Forward.MaxRejects},
		{name: "forward-commit-interval", roles: sp, help: "least time between two spool cursor writes (each an fsync)", ptr: &c.Forward.CommitInterval},
		{name: "forward-shutdown-grace", roles: sp, help: "on stop, how long SQS calls in flight may still take", ptr: &c.Forward.ShutdownGrace},
		{name: "forward-max-waiters", roles: sp, help: "with --ack-after=queue: records waiting for SQS at once; beyond, devices get 5.03", ptr: &c.Forward.MaxWaiters},

		// `coapgw process`
		{name: "sink", roles: pr, help: "where records go: awsiot (thing types, things, shadows in AWS IoT)", ptr: &c.Consume.Sink},
		{name: "publish-topic", roles: pr | Lambda, help: "also publish every record (envelope JSON) to this MQTT topic; {type} and {thing} are replaced; a Basic Ingest topic $aws/rules/<rule> works (empty: off)", ptr: &c.IoT.PublishTopic},
		{name: "iot-data-endpoint", roles: pr | Lambda, help: "the account's iot:Data-ATS endpoint (empty: looked up with DescribeEndpoint)", ptr: &c.IoT.DataEndpoint},
		{name: "pollers", roles: pr, help: "concurrent SQS long polls", ptr: &c.Consume.Pollers},
		{name: "batch-size", roles: pr, help: "most messages applied as one batch (one shadow update per thing per batch)", ptr: &c.Consume.BatchSize},
		{name: "thing-cache-size", roles: pr | Lambda, help: "things remembered (type, shadow version and state)", ptr: &c.IoT.ThingCacheSize},
		{name: "thing-cache-bytes", roles: pr | Lambda, help: "memory of the things remembered, estimated per thing (in Lambda, default a quarter of the function's memory)", ptr: &c.IoT.ThingCacheBytes},
		{name: "iot-concurrency", roles: pr | Lambda, help: "things updated at once within a batch", ptr: &c.IoT.Concurrency},
		{name: "fifo-queue", roles: pr | Lambda, help: "the queue is FIFO, one message group per thing (automatic for a .fifo URL): shadows are written blindly in queue order, coapgw's bookkeeping goes to the named shadow \"coapgw\", none into state.reported", ptr: &c.IoT.Ordered},
		{name: "iot-consumers", roles: pr | Lambda, help: "consumers sharing the account's CreateThing/CreateThingType rates (Lambda: the event source mapping's maximum concurrency; workers: how many run): each paces itself to 1/N of them and hands back at once the records it cannot onboard in time", ptr: &c.IoT.Consumers},
		{name: "iot-create-thing-rate", roles: pr | Lambda, help: "the account's CreateThing rate (calls/s, AWS's default quota 100) that the consumers share; CreateThingType is paced at 15/s the same way", ptr: &c.IoT.CreateThingRate},
		{name: "publish-pack", roles: pr | Lambda, help: "with --publish-topic: one message per thing and batch, {\"records\":[…]} (up to 128 KB), instead of one per record (IoT's Publish API takes one message per call)", ptr: &c.IoT.PublishPack},
		{name: "adopt-things", roles: pr | Lambda, help: "use things that already exist (fleet provisioning, JITP) as they are, typed or not; their type is never changed", ptr: &c.IoT.AdoptThings},
		{name: "visibility-timeout", roles: pr, help: "visibility timeout requested on receive; a batch must finish within 5/6 of it", ptr: &c.Consume.VisibilityTimeout},
		{name: "wait-time", roles: pr, help: "long-polling wait of each receive (at most 20s); a stop waits for the polls in flight", ptr: &c.Consume.WaitTime},
		{name: "batch-wait", roles: pr, help: "how long a batch gathers messages after its first", ptr: &c.Consume.BatchWait},
		{name: "stop-timeout", roles: pr, help: "on SIGTERM, how long the current batch may still take", ptr: &c.Consume.StopTimeout},

		// The 2018 CoAP-to-AWS-IoT ingestor's devices, queue messages and shadows (docs/migrate-from-2018.md)
		{name: "compat", roles: sp, help: "off, or seed: a GET, POST or PUT with a payload on /{type}/{id} is telemetry, answered with the text RECEIVED OK (errors: FAILURE), as the 2018 ingestor did", ptr: &c.Compat.Device},
		{name: "envelope", roles: sp, help: "SQS message body with --queue: coapgw (docs/envelope.md), or seed: the 2018 ingestor's {timestamp, ip, path, method, payload}; seed accepts only JSON payloads (Content-Format absent or 50)", ptr: &c.Compat.Envelope},
		{name: "seed-shadow", roles: sp | pr | Lambda, help: "write shadows as the 2018 processor did: online \"true\", uuid and type in state.reported; AWS: thing type description = its name, thing attribute FirstSeen", ptr: &c.Compat.SeedShadow},
	}
	out := table[:0]
	for _, o := range table {
		if o.roles&role != 0 {
			out = append(out, o)
		}
	}
	return out
}
