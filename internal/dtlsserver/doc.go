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
// extension. One reader goroutine takes datagrams 32 at a time (recvmmsg, package udpbatch) and
// routes each: a tls12_cid record by its Connection ID, anything else by the address it came
// from; only an epoch-0 ClientHello starts a session. A device whose NAT mapping changes keeps
// its session without a handshake: a record that authenticates from a new address, and is the
// newest the session has had (RFC 9146 §6), moves the session there.
//
// The exchange layer sees each session as one peer with a stable key, an address in 100::/64
// (RFC 6666 discard prefix) numbered per session (sessionKey), never as its current address:
// deduplication and separate responses survive an address change, and the Sender maps the key
// back to the session to encrypt. Request.Peer is the address the session's last authenticated
// record came from.
//
// Established sessions are bounded: MaxSessions (100,000), past which a completing handshake
// evicts the least recently active session; a session without datagrams for IdleTimeout (24 h)
// is closed (close_notify if awake).
//
// The record layer (fastpath.go, package dtlsrecord): pion runs each handshake on a Conn of its
// own. Once the session's first record after the handshake has arrived — a client sends one only
// after it has the server's last flight, so pion will never need to retransmit that flight — or
// once the session has been quiet for 5 s after it (a client that lost that flight retransmits
// its own within a second or two, and pion answers; a pion Conn costs ~50 KB), the session is
// handed over: the Conn stops getting datagrams, the records it already decrypted
// are queued, its state is exported (Conn.ConnectionState, State.MarshalBinary: master secret,
// randoms, suite, sequence numbers, Connection IDs), the Conn muted (it sends nothing more, not
// even close_notify, so no record number is used twice) and closed. From then on the reader
// opens the session's records itself, in place in its read buffer, with pion's cipher suites
// (keys derived by pion's PRF; records numbered on from pion's; RFC 6347 §4.1.2.6 replay window
// of 64, starting above the highest number pion accepted), and hands each CoAP message straight
// to the exchange layer; Send seals the answer and queues it for the sender goroutine, which
// writes in batches (sendmmsg). While the reader works through a recvmmsg batch of more than one
// datagram it holds the queue (udpbatch.Queue.Hold), so the batch's answers go out together,
// with one wake-up of the sender, not one each (answers sent meanwhile from other goroutines
// wait for the batch's end too). No goroutine per session, none per message. A record that does
// not authenticate, is replayed or too old, or carries no or another Connection ID is dropped
// silently (RFC 6347 §4.1.2.7) and counted; a close_notify or fatal alert ends the session (a
// close_notify is answered); a ClientHello from the session's address starts a new handshake;
// handshake records in epoch 1 are dropped. A session in the record layer is a session struct
// and a dtlsrecord.Conn: ~2.6 KB of heap with its AES state (4 KB of RSS), none of pion's.
//
// Hibernation (hibernate.go): a session without datagrams for HibernateAfter (30 s) drops the
// keys derived from its master secret (and the AES state built from them); its next datagram,
// or a response the exchange layer sends it, derives them again, which the peer does not see.
// The janitor that hibernates also hands over the quiet sessions still on pion's Conn; the
// datagrams routed to such a session are queued under the session's lock, so none is lost to
// the handover. BenchmarkSessionMemory measures both (the clients dropped without a word):
//
//	DTLS_BENCH_SESSIONS=100000 go test -run XXX -bench SessionMemory/awake -benchtime 1x ./internal/dtlsserver/
//	  2,584 heap-B/session, 4,073 rss-B/session, 0 goroutines/session (10,000 sessions)
//	DTLS_BENCH_SESSIONS=10000 go test -run XXX -bench SessionMemory/hibernated -benchtime 1x ./internal/dtlsserver/
//	  1,286 heap-B/session, 1,570 rss-B/session, 0 goroutines/session
//
// (With a pion Conn per session, before the record layer: 23,720 heap-B and 70,004 rss-B per
// awake session, 4 goroutines.)
//
// Dispatch (dispatch.go): the records pion decrypts (the first of each session, and those of a
// session whose handover failed) are not handed to the exchange layer by the session's
// goroutine but queued (at most 4 per session; past that it blocks, its queues fill and the
// reader drops) to a dispatcher, one per GOMAXPROCS, a session always to the same one so that
// its datagrams keep their order. A dispatcher that wakes yields once and then hands on
// everything queued, as the plain CoAP reader does with a recvmmsg batch, so the handler's work
// comes in bursts: the spool commits a burst's records with one fsync. While some of a
// session's datagrams wait there, the reader queues the session's next ones behind them rather
// than handing them on itself.
//
// CPU (BenchmarkMessages, BenchmarkPlainMessages: pion clients in the same process, one request
// at a time; the server's share from go tool pprof -tagfocus side=server on -cpuprofile), 2
// vCPU shared with other work (load average 11): a CON POST and its 2.04 cost the server ~6.3
// µs over 64 DTLS sessions in the record layer (~13.7 µs with pion's per-Conn path, same run)
// against ~3.0 µs over plain CoAP; a full PSK handshake with cookie ~75–80 µs of server CPU (~235
// µs with the client; after the pion patches of third_party/pion-dtls/PATCH.md, 76–100 before). What the record layer adds per message is pion's AES-CCM (~0.9 µs a
// record each way, BenchmarkSealOpen in package dtlsrecord) and, one request at a time, a
// sender wake-up per answer, which batches amortise under load. docs/benchmarks.md has make
// bench's figures.
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
// ones and writes them to StateFile (mode 0600: it holds session keys): a session in the record layer as its dtlsrecord.State, encoded
// as pion encodes its own (gob, pion's field names), one still on pion's Conn as pion exports
// it. Listen loads the file and removes it at once, and Serve restores them into the record
// layer, hibernated: a device sends after a deploy without a new handshake. A saved
// session must be resumed at most once (its record sequence numbers would repeat), hence the
// removal; the file must never be copied to a second gateway. A Shutdown while Serve is still
// starting (a gateway stopped as it starts) waits for Serve's setup, which holds the lock
// Shutdown takes first; one before Serve keeps the loaded sessions for the next start, and
// Serve then starts nothing.
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
//	                                              revoked (its session ended at a recheck);
//	                                              for sessions in the record layer, per record:
//	                                              replayed (replay window), unauthenticated
//	                                              (forged or corrupted), bad_record (malformed,
//	                                              another epoch or Connection ID, a handshake
//	                                              record), closed (close_notify or fatal alert)
//	coapgw_dtls_sessions_saved_total              sessions written to StateFile at shutdown
//	coapgw_dtls_sessions_restored_total           sessions resumed from it at start
//	coapgw_dtls_hibernated_sessions               established sessions hibernated (keys dropped)
//	coapgw_dtls_hibernations_total                sessions hibernated
//	coapgw_dtls_wakes_total                       hibernated sessions woken (keys derived again)
//
// The exchange layer's own metrics (package coapserver) are registered with the prefix
// "dtls_": dtls_coapgw_coap_datagrams_total{disposition}, dtls_coapgw_coap_responses_total{code}, ...
package dtlsserver
