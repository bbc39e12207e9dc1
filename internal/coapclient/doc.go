// Package coapclient sends one CoAP request at a time, as a device does: over a connected UDP
// socket or a DTLS 1.2 PSK session (pion/dtls), a CON retransmitted per RFC 7252 §4.2 until it
// is acknowledged, or a NON sent once. It follows an empty ACK to the separate response (and
// acknowledges a CON one), and repeats a request once with the Echo value of a 4.01 that carries
// one (RFC 9175: the gateway verifying the address before a larger answer).
//
// `coapgw send` and the canary (cmd/coapgw-canary) use it; the load generator (internal/loadgen)
// keeps its own event loop, built for many devices at once. It has no metrics and no config keys.
package coapclient
