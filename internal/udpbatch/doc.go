// Package udpbatch moves UDP datagrams in batches: Reader takes up to n datagrams per
// recvmmsg(2) call into reusable buffers (the caller may decrypt them in place), and Queue
// collects datagrams from any goroutine for one goroutine that writes them with sendmmsg(2);
// Queue.Hold and Release let a goroutine that answers a batch of datagrams have its answers
// written together, with one wake-up of the writer.
// Elsewhere than Linux both fall back to one datagram per system call.
//
// The plain CoAP server (package coapserver) uses both for every datagram, the DTLS server
// (package dtlsserver) for the records of its established sessions.
package udpbatch
