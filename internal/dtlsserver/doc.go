// Package dtlsserver is the gateway's CoAP-over-DTLS transport (RFC 7252 §9, "coaps"): DTLS 1.2
// with pre-shared keys, done by pion/dtls, feeding the same exchange layer as plain CoAP
// (coapserver.Endpoint: deduplication, piggybacked and separate responses, the same Handler). A
// request over DTLS differs only in carrying the session's authenticated PSK identity in
// Request.Identity ("sensor/dev-1": who may write what is the handler's business).
//
// # Handshakes
//
// Cipher suites are fixed: TLS_PSK_WITH_AES_128_CCM_8 (the one RFC 7252 mandates for PSK mode)
// and TLS_PSK_WITH_AES_128_GCM_SHA256. Config.PSK is asked for the key of the identity a client
// names; an error refuses the handshake. The HelloVerifyRequest cookie exchange always runs.
//
// The cookie exchange is stateless (RFC 6347 §4.2.1; cookie.go): the reader answers an epoch-0
// ClientHello without a valid cookie with a HelloVerifyRequest itself and keeps nothing, so a
// flood of ClientHellos from spoofed addresses creates no per-peer state. The cookie is an
// HMAC-SHA256 (16 bytes) over the client's address and port and the ClientHello's version,
// random, session_id, cipher suites and compression methods, keyed by a random secret replaced
// every 2 minutes (the previous one is still accepted). The HelloVerifyRequest (44 bytes) takes
// the ClientHello's record sequence number and message_seq, and is never longer than the
// ClientHello. A ClientHello with a forged or stale cookie, or one made for another address, is
// answered like one without. A fragmented ClientHello cannot be checked statelessly and is
// dropped (bad_hello). Answering allocates nothing: 100,000 ClientHellos from distinct addresses
// leave the gateway's RSS at 19 → 22 MiB and its goroutines unchanged (with a Conn per
// ClientHello it was 86 MiB and 4,096 goroutines more; docs/benchmarks.md, "Stateless cookie").
//
// Only a ClientHello with a valid cookie creates a handshake in progress: a pion Conn (~24 KB
// of heap, 4 goroutines), told by dtls.WithHelloVerified to continue from that ClientHello's
// message_seq and record sequence number. pion/dtls v3.1.16 cannot do that (it expects the
// ClientHello at message_seq 0 and would number its ServerHello 0, where the client expects 1,
// and the handshake transcript covers those numbers), so go.mod replaces it with a patched copy,
// third_party/pion-dtls (PATCH.md there). At most MaxHandshakes (1,024) are in progress, each
// abandoned after HandshakeTimeout (10 s); past the cap a ClientHello is dropped
// (handshakes_full): holding a slot takes a peer that receives at its address. A second
// ClientHello with a valid cookie from an address whose handshake is in progress goes to that
// handshake (a retransmission: pion answers it with its last flight).
//
// # Sessions and Connection IDs
//
// The server issues an 8-byte Connection ID (RFC 9146) to every client that offers the
// extension. One reader goroutine routes each datagram: a tls12_cid record by its Connection
// ID, anything else by the address it came from; only an epoch-0 ClientHello starts a session.
// A device whose NAT mapping changes keeps its session without a handshake: pion authenticates
// the record from the new address and answers there, and the server follows it.
//
// The exchange layer sees each session as one peer with a stable key, an address in 100::/64
// (RFC 6666 discard prefix) numbered per session (sessionKey), never as its current address:
// deduplication and separate responses survive an address change, and the Sender maps the key
// back to the session to encrypt. Request.Peer is the address pion last authenticated for it.
//
// Established sessions are bounded: MaxSessions (100,000), past which a completing handshake
// evicts the least recently active session; a session without datagrams for IdleTimeout (24 h)
// is closed.
//
// Hibernation (hibernate.go): an awake session is a pion Conn with 4 goroutines, ~24 KB of
// heap and ~70 KB of RSS; 100,000 of them would take 7 GB. A session without datagrams for
// HibernateAfter (30 s) is muted, exported and its Conn closed, leaving ~1.4 KB of heap; its
// next datagram (or a response the exchange layer sends it) resumes it with a new Conn, without
// a handshake. BenchmarkSessionMemory measures both:
//
//	DTLS_BENCH_SESSIONS=10000 go test -run XXX -bench SessionMemory/awake -benchtime 1x ./internal/dtlsserver/
//	  23,720 heap-B/session, 70,004 rss-B/session, 4 goroutines/session
//	DTLS_BENCH_SESSIONS=100000 go test -run XXX -bench SessionMemory/hibernated -benchtime 1x ./internal/dtlsserver/
//	  1,390 heap-B/session, 1,781 rss-B/session, 0 goroutines/session
//
// Dispatch (dispatch.go): a session's goroutine does not call the exchange layer itself but
// queues each decrypted datagram (at most 4 per session; past that it blocks, its queues fill
// and the reader drops) to a dispatcher, one per GOMAXPROCS, a session always to the same one so
// that its datagrams keep their order. A dispatcher that wakes yields once and then hands on
// everything queued, as the plain CoAP reader does with a recvmmsg batch, so the handler's work
// comes in bursts: the spool commits a burst's records with one fsync. Called one datagram at a
// time from thousands of session goroutines, it committed a few records per fsync, and with
// GOMAXPROCS=1 each fsync held the only P: at 2,000 sessions the server idled at half a core
// with 250 ms of latency.
//
// CPU (BenchmarkMessages, BenchmarkHandshake, BenchmarkPlainMessages: pion clients in the same
// process; the server's share from go tool pprof -tagfocus side=server on -cpuprofile), 2 vCPU:
// a CON POST and its 2.04 costs the server ~11 µs over 64 DTLS sessions against ~3.6 µs over
// plain CoAP (per-datagram goroutine hand-offs and a sendto(2) per response in pion's
// per-Conn path); a full PSK handshake with cookie ~76 µs of server CPU (~235 µs with the
// client).
//
// # Revocation
//
// Config.PSK answers at every full handshake, so a revoked identity (the hook's error) makes no
// new session. A live session is held to the same answer: when one of its records arrives
// at least RecheckInterval (1 s) after its identity was last asked, the reader asks again
// before handing the record on (a hibernated session before it wakes, a restored one at its
// first record). If the hook refuses the identity, or answers a key other than the one the
// session was established with (a rotated key; the session keeps only the key's SHA-256, also
// in StateFile), the record goes unanswered and the session is closed (with close_notify if it
// was awake) and removed (eviction reason "revoked"): the device must handshake again, which
// fails if its key is revoked. No timer or goroutine per session: a record costs one atomic
// load and one comparison when no check is due, and a session that sends nothing holds nothing
// open.
//
// The bound, end to end with the gateway's credential stores (package credential): a revoked
// identity's last request is accepted at most Refresh (2 s; a per-device key revoked with
// `coapgw device revoke`) or RevocationCheck (1 s; a fleet key listed in the revocation file)
// plus RecheckInterval (1 s) after the revocation: within about 3 s. Responses the exchange
// layer sends on its own (separate responses to requests accepted before) are not checked.
//
// Graceful restart: Shutdown stops reading, waits (up to its context) for requests in flight,
// mutes every session (nothing more is sent, not even close_notify), exports the established
// ones (pion's Conn.ConnectionState, State.MarshalBinary) and writes them to StateFile (mode
// 0600: it holds session keys). Listen loads the file and removes it at once, and Serve resumes
// them hibernated: a device sends after a deploy without a new handshake. A saved
// session must be resumed at most once (its record sequence numbers would repeat), hence the
// removal; the file must never be copied to a second gateway.
//
// # Config
//
// The gateway's flags for this package: coaps-addr (Addr, default ":5684"), dtls-max-sessions
// (MaxSessions), dtls-max-handshakes (MaxHandshakes), dtls-idle-timeout (IdleTimeout),
// dtls-hibernate-after (HibernateAfter), dtls-handshake-timeout (HandshakeTimeout),
// dtls-recheck-interval (RecheckInterval), dtls-state-file (StateFile); max-payload sets
// MaxDatagram. The PSK lookup comes from the credential store.
//
// # Metrics
//
//	coapgw_dtls_sessions{state}                   sessions: established, handshake (in progress)
//	coapgw_dtls_handshakes_total{result}          handshakes ended: ok, failed, timeout,
//	                                              aborted (shutdown); displaced no longer
//	                                              occurs (no handshake before the cookie)
//	coapgw_dtls_session_evictions_total{reason}   sessions closed by the server: idle, cap,
//	                                              revoked (refused or rotated key at a recheck)
//	coapgw_dtls_datagrams_total{disposition}      datagrams received: session, hello (a
//	                                              ClientHello with a valid cookie that started
//	                                              a handshake), hello_verify (a ClientHello
//	                                              without cookie, answered with a
//	                                              HelloVerifyRequest), bad_cookie (one with an
//	                                              invalid cookie, answered likewise), bad_hello
//	                                              (a ClientHello not readable whole:
//	                                              fragmented, malformed), unknown_cid,
//	                                              unknown_peer, short, queue_full,
//	                                              handshakes_full, oversized (over MaxDatagram),
//	                                              revoked (its session ended at a recheck)
//	coapgw_dtls_sessions_saved_total              sessions written to StateFile at shutdown
//	coapgw_dtls_sessions_restored_total           sessions resumed from it at start
//	coapgw_dtls_hibernated_sessions               established sessions hibernated
//	coapgw_dtls_hibernations_total                sessions hibernated
//	coapgw_dtls_wakes_total                       hibernated sessions woken
//
// The exchange layer's own metrics (package coapserver) are registered with the prefix
// "dtls_": dtls_coapgw_coap_datagrams_total{disposition}, dtls_coapgw_coap_responses_total{code}, ...
package dtlsserver
