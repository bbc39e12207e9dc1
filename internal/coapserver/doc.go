// Package coapserver is the gateway's CoAP messaging layer (RFC 7252): the exchange layer that
// turns datagrams from peers into requests for a Handler and its answers back into datagrams
// (Endpoint), and the UDP transport that feeds it (Server). It uses no goroutine per peer or per
// message: a fixed set of readers, one sender, one timer goroutine.
//
// # Exchange layer
//
// Endpoint.HandleDatagram(peer, datagram) is the transport-agnostic entry: the endpoint never sees
// a socket, only (peer, datagram) pairs in and datagrams for a Sender out. UDP feeds it today;
// DTLS will feed it decrypted records later and fill Request.Identity with the session's PSK
// identity. For each datagram it decides, and counts by disposition:
//
//   - shorter than 4 bytes, or not version 1: dropped;
//   - a message format error (RFC 7252 §3): RST for a CON whose header parses, else dropped;
//   - more than coapmsg.MaxOptions (64) options: decoding stops at the 65th, so such a datagram
//     costs no more than any other of its size; a CON request gets a piggybacked 4.00 "too many
//     options" and never reaches deduplication or the handler, a NON or an ACK/RST is dropped,
//     another CON gets RST (see Endpoint.tooManyOptions for why 4.00 and not RST or 4.02);
//   - ACK or RST: never answered; matched against the separate responses awaiting an ACK;
//   - an empty CON (a ping): RST. An empty NON, a response code, a reserved code class: RST for a
//     CON, dropped for a NON;
//   - a duplicate (same peer and Message ID): see below;
//   - otherwise a request: its options are checked, and a valid one goes to the Handler.
//
// Deduplication (RFC 7252 §4.5) remembers (peer, MID) for EXCHANGE_LIFETIME (247 s) after a CON
// and NON_LIFETIME (145 s) after a NON, with the response sent. A retransmitted CON gets that
// response again (or the empty ACK, if that is what went out) and reaches the handler once; a
// duplicate still being handled is dropped; a duplicate NON is ignored. Memory is bounded: at
// most DedupPerPeerCap (1024) entries per peer and DedupGlobalCap (500,000, ~230 bytes each)
// in all, split over DedupShards (64) shards chosen by a hash of the peer, each with its own lock;
// the oldest entries go first. Expiry and eviction pop insertion-ordered queues, so the hot path
// never scans. Short responses are cached inside the entry.
//
// A CON request answered within PiggybackDeadline (1 s, below ACK_TIMEOUT) gets its response
// piggybacked in the ACK. Past it the timer goroutine sends an empty ACK (which stops the
// client's retransmissions), and the response goes later as a separate CON with a new MID,
// retransmitted after AckTimeout (2 s) times a factor in [1, 1.5), doubling each time, up to
// MaxRetransmit (4) times (fewer to an unverified peer whose request was tiny: see
// Amplification below), until the peer ACKs it or answers RST (it no longer has the exchange).
// At most MaxOutstanding (10,000) separate responses are tracked. A NON request gets a NON
// response with a new MID, or, if the handler calls Drop, none (RFC 7252 §5.2.3).
//
// HandleOversized takes a datagram longer than the transport reads: nothing of it reaches the
// handler; a CON request gets 4.13 with Size1 = MaxRequestBody (and, with BlockWise, a Block1
// option saying the body may come in blocks of BlockSize, RFC 7959 §2.9.3), anything else is
// dropped.
//
// # Options and the Request view
//
// Before a handler sees a request, the endpoint parses its options once (Request.parse in
// request.go) and answers itself, in option order so that the first offending option decides:
// Proxy-Uri or Proxy-Scheme get 5.05 (the gateway is no proxy); an unrecognised critical option,
// or a recognised one repeated or of illegal length (Uri-Host, Uri-Port, Accept), gets 4.02 with
// a diagnostic naming it for a CON and nothing for a NON (RFC 7252 §5.4.1, §5.4.3, §5.4.5).
// Block1 and Block2 are unrecognised, hence 4.02, unless Options.BlockWise turns block-wise
// transfer on (RFC 7959, below). Size1, Size2 and Request-Tag (RFC 9175) are elective: read, never
// refused. Unrecognised elective options are ignored. A Handler that also implements
// RejectObserver is told of each such request (and of each block the block-wise layer refuses),
// to count it.
//
// The Request a handler gets is a view of the message, built without allocating: method, Uri-Path
// segments, Uri-Query values, Content-Format and Accept (each with a flag for absent), Echo,
// Block1/Block2 (number, more, size exponent), Size1, the peer, its Identity (empty for plain CoAP), the
// time the datagram was read, and Msg for raw access. Its slices alias the datagram, which the
// transport reuses: the Request is valid only until ServeCoAP returns, and is cleared then.
//
// # Block-wise transfer (RFC 7959)
//
// With Options.BlockWise the endpoint does block-wise transfer itself, so that handlers never
// see a block: a request without Block options costs a flag test before the handler and one in
// Respond, and its exchange 20 bytes of block state.
//
// Block1 (block1.go, blockwise.go): the endpoint reassembles a request body sent in blocks and
// hands the handler one request carrying all of it, with the options of the last block; until
// then it answers each block 2.31 Continue with Block1 echoed (M set), and nothing is stored. Each
// block is an exchange of its own, so a retransmitted block gets its 2.31 again from
// deduplication. Bodies are kept per (peer, method, Uri-Path, Request-Tag), the peer being the
// address or, over DTLS, the session (HandleSession's key). Errors: 4.08 for a block that does
// not continue the body (a gap, no block 0; the body is dropped), 4.13 with Size1 =
// MaxRequestBody and a Block1 size hint for a Size1 or a body over it (before the last block), 4.00 for SZX 7 or a block
// with M that is not exactly its size, 4.02 for Block1 in a GET or DELETE (no body), 5.03 with
// Max-Age (RetryAfter) when a body cannot grow within the memory bound. A block larger than
// BlockSize is taken and the 2.31 asks for BlockSize (late negotiation); otherwise the client's
// size stands. The last block's answer is the handler's (2.04 once the record is durable),
// echoing Block1. Bounds: BlockMaxBytes of buffers (counted by capacity, plus 160 bytes a body)
// over all peers, split in up to 16 shards by peer, the least recently active bodies evicted
// first; BlockPerPeer bodies a peer (a new one replaces its oldest); BlockTimeout without a block
// and a body is dropped (the timer goroutine sweeps). A body is held until the handler's
// ServeCoAP returns, which copies what it keeps.
//
// Block2 (block2.go): the endpoint is stateless; a handler answers with the whole
// representation and the endpoint sends the block asked for (block 0 without a Block2 option),
// of the client's block size or BlockSize, whichever is smaller, with Size2 if the request had
// Size2. To an unverified peer a block shrinks (to 16 bytes at least) until the response keeps
// within MaxAmplification times the request; ResponseWriter.Size measures the block, so a
// handler's amplification check sees what is sent. A block past the end gets 4.02. Only 2.xx
// responses are sliced; error diagnostics are short.
//
// # Handler and ResponseWriter
//
// A Handler is shaped like net/http's: ServeCoAP(w, r) must call w.Respond exactly once, before
// it returns or, after w.Defer, later from any goroutine (the gateway answers once the spool has
// made the record durable). A handler that returns without either gets 5.00 sent for it. Drop
// ends a NON exchange without an answer (a CON gets 5.03 instead). SetOption and SetUintOption
// add up to 4 response options of 16 bytes in all. The token is echoed byte for byte. A
// Middleware wraps a Handler in another; the application assembles its chain in one place (the
// gateway's is in package ingest, pipeline.go).
//
// Amplification (RFC 7252 §11.3): over UDP a request's source address is unverified, so no
// response should be longer than MaxAmplification (3) times the request. w.RequestSize is the
// request datagram's length and w.Size what a response would measure; w.Diagnostic drops a
// diagnostic payload that would break the bound (the endpoint's own 4.02 uses it). Handlers with
// larger answers challenge with an Echo option first (see package ingest).
//
// The bound covers a separate response too, with everything sent for the request: the empty ACK
// (4 bytes), the separate CON and each retransmission. To an unverified peer the separate
// response goes out only as many times as fit in MaxAmplification times the request, at most
// 1 + MaxRetransmit (and not at all if not even once; each such cut counts in
// coapgw_coap_separate_limited_total). A peer is verified when the request came over DTLS
// (Request.Identity not empty: the handshake proved the address) or the handler said so with
// w.PeerVerified (a valid Echo, RFC 9175). What a plain-CoAP device loses: when its request is
// small and the answer late, fewer retransmissions of the separate response, so on a lossy link
// it is likelier to hear the empty ACK and never the answer, and to have to repeat the request
// (a new MID, so a new exchange). A bare 2.04 with an 8-byte token is a 12-byte separate
// response: requests of 22 bytes or more keep all 4 retransmissions, a 20-byte one gets 3, and
// since a request is never shorter than a bare answer with its token, a bare separate response
// is always sent at least twice. A typical device POST with a JSON body loses nothing.
//
// Attach (attach.go) gives an exchange a payload that its answer carries if it is a 2.xx given
// without one of its own, within a block and the amplification bound: the device API's 2.04
// carries a thing's pending desired-state change this way.
//
// Observe (observe.go, RFC 7641): ResponseWriter.Observe registers the client of a GET as an
// observer of a resource, Endpoint.Notify sends the observers of a resource its new
// representation; the file's comment says how notifications are confirmed, when observers are
// removed, and what they cost.
//
// Endpoint.Inflight is the number of requests handed to the handler and not yet answered.
//
// # UDP transport
//
// Server (udp.go) binds Config.Addr with Sockets sockets (default 1; more share the port with
// SO_REUSEPORT, and the kernel spreads peers over them), each with SO_RCVBUF and SO_SNDBUF of
// SocketBytes (default 8 MiB, forced past the sysctl limit when allowed; when it is not, Listen
// warns with the configured and effective sizes and how to raise the limit), and one reader
// goroutine per socket that takes up to Batch (64) datagrams per recvmmsg(2) into fixed buffers
// and hands each to the Endpoint. A datagram longer than MaxDatagram (default 16 KiB) goes to
// HandleOversized. Responses are copied into a queue (bounded at 65,536 datagrams; beyond that
// they are dropped, as a congested network would) that one sender goroutine writes with
// sendmmsg(2). Elsewhere than Linux, one datagram per system call. New does no I/O; Listen
// binds; Serve runs until its context ends or Shutdown (which waits for the requests in flight)
// or Close stops it. Either may be called from another goroutine while Serve is still starting
// its goroutines: Serve starts them under the lock that Shutdown and Close take first, so they
// wait for all of them, or Serve, coming second, starts none and returns nil.
//
// One gateway per port: before binding, Listen takes a lock on the UDP port (on Linux an
// abstract unix socket "@coapgw-udp-<port>", which the kernel frees when the process ends, even
// by kill -9), so that a second gateway on a port another one serves fails with ErrPortServed
// instead of joining it through SO_REUSEPORT and splitting the devices between two registries.
// The lock is keyed on the port alone, as the wildcard address overlaps every specific one. A
// port held by a program that is no gateway fails the bind as before (EADDRINUSE).
//
// The gateway's flags and config keys for this package: coap-addr (Addr), coap-sockets
// (Sockets), socket-buffer (SocketBytes), piggyback-deadline, dedup-max-entries (DedupGlobalCap),
// dedup-per-peer (DedupPerPeerCap), block-size (BlockSize), blockwise-max-bytes
// (BlockMaxBytes), blockwise-per-peer (BlockPerPeer), blockwise-timeout (BlockTimeout),
// max-observers (MaxObservers), observe-keepalive (ObserveKeepAlive); the gateway sets BlockWise; max-payload sets MaxRequestBody and MaxDatagram, retry-after
// RetryAfter.
//
// # Metrics
//
// The exchange layer (metrics.go):
//
//	coapgw_coap_datagrams_total{disposition}      datagrams received: request, duplicate, ping,
//	                                               ack_rst, format_error, unsolicited, short,
//	                                               bad_version, oversized, too_many_options
//	coapgw_coap_responses_total{code}              responses sent, by code ("rst" for RST;
//	                                               replayed responses included)
//	coapgw_coap_empty_acks_total                   empty ACKs sent because the answer was late
//	coapgw_coap_separate_responses_total           separate CON responses sent
//	coapgw_coap_separate_retransmissions_total     their retransmissions
//	coapgw_coap_separate_acked_total               separate responses the peer acknowledged
//	coapgw_coap_separate_rejected_total            separate responses the peer rejected (RST)
//	coapgw_coap_separate_gave_up_total             separate responses given up after MAX_RETRANSMIT
//	                                               (or after fewer, as amplification allowed)
//	coapgw_coap_separate_limited_total             separate responses sent fewer times, or not at
//	                                               all, to keep within MaxAmplification
//	coapgw_coap_block1_total{outcome}              blocks of request bodies: continued (2.31),
//	                                               completed (the body went to the handler),
//	                                               incomplete (4.08), too_large (4.13), bad_block
//	                                               (4.00, 4.02), memory_full (5.03); and bodies
//	                                               dropped: evicted (per-peer or memory bound),
//	                                               expired (BlockTimeout)
//	coapgw_coap_block1_bodies                      request bodies in reassembly
//	coapgw_coap_block1_bytes                       bytes they are counted for (≤ BlockMaxBytes)
//	coapgw_coap_block2_responses_total             responses sent as one block of a larger payload
//	coapgw_coap_attachments_dropped_total          2.xx answers sent without their attached payload
//	                                               (ResponseWriter.Attach: over a block or the
//	                                               amplification bound)
//	coapgw_coap_observers                          observers registered (observe.go)
//	coapgw_coap_notifications_total{type}          notifications sent: non, con
//	coapgw_coap_observers_removed_total{reason}    observers removed: rst, timeout, deregistered,
//	                                               replaced
//	coapgw_coap_observers_refused_total            registrations beyond MaxObservers
//
// The UDP server (udp.go):
//
//	coapgw_udp_receive_buffer_drops_total          datagrams the kernel dropped, receive buffers full
//	coapgw_udp_receive_buffer_bytes                the receive buffer the kernel gave a CoAP socket
//	coapgw_coap_dedup_entries                      (peer, MID) pairs remembered
//	coapgw_coap_inflight_requests                  requests handed to the handler, not yet answered
package coapserver
