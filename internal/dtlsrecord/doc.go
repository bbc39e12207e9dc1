// Package dtlsrecord is the DTLS 1.2 record layer (RFC 6347 §4.1, RFC 9146 Connection IDs) of
// an established session, for the sessions whose handshake pion/dtls completed: it takes the
// state pion exports (dtls.State.MarshalBinary), derives the keys with pion's PRF
// (pkg/crypto/prf), and seals and opens records with pion's AEAD cipher suites
// (pkg/crypto/ciphersuite: AES-128-CCM-8 and AES-128-GCM), so that a server can run thousands
// of sessions from one loop instead of a pion Conn and its goroutines each. No cryptographic
// primitive is implemented here; what is here is framing: record headers, the RFC 9146
// DTLSInnerPlaintext, sequence numbers and the RFC 6347 §4.1.2.6 replay window.
//
// A Conn is not safe for concurrent use: its owner serialises Open and Seal. Sequence numbers
// continue from the exported ones: records sealed after the export are numbered from pion's
// next write sequence number, and records opened are accepted only above the highest one pion
// had accepted (its RemoteSequenceNumber), as pion does when it resumes a state. The exported
// state must be used once, and the pion Conn it came from must send nothing after the export
// (see dtls.State.MarshalBinary), or nonces would repeat.
//
// Handshakes, renegotiation and epochs past 1 are not handled: a record of another epoch is
// refused (ErrEpoch) and its owner decides what to do with it (a ClientHello in epoch 0 starts a
// new session through pion).
package dtlsrecord
