package dtlsrecord

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
)

// State is an established session as pion/dtls exports it: dtls.State.MarshalBinary is the gob
// encoding of pion's serializedState, which gob decodes by field name into this struct (the
// fields a record layer needs; gob skips the others). Marshal encodes it the same way, so
// pion's State.UnmarshalBinary reads what Marshal wrote.
type State struct {
	// RemoteSequenceNumber is one above the highest record number accepted from the peer in
	// the current epoch; SequenceNumber the next number to write.
	RemoteSequenceNumber uint64
	HandshakeComplete    bool
	LocalEpoch           uint16
	RemoteEpoch          uint16
	LocalRandom          [32]byte
	RemoteRandom         [32]byte
	CipherSuiteID        uint16
	MasterSecret         []byte
	SequenceNumber       uint64
	// IdentityHint is, on a PSK server, the identity the client authenticated with.
	IdentityHint []byte
	// LocalConnectionID is what the peer puts in its records (RFC 9146); RemoteConnectionID what
	// this side puts in its own. Empty: not negotiated.
	LocalConnectionID  []byte
	RemoteConnectionID []byte
	IsClient           bool
}

// ParseState decodes what dtls.State.MarshalBinary (or State.Marshal) produced.
func ParseState(b []byte) (State, error) {
	var st State
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&st); err != nil {
		return State{}, fmt.Errorf("decode dtls state: %w", err)
	}
	return st, nil
}

// Marshal encodes st as pion does (gob, pion's field names).
func (st *State) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(st); err != nil {
		return nil, fmt.Errorf("encode dtls state: %w", err)
	}
	return buf.Bytes(), nil
}

// Peer is the same session as the other side sees it: randoms, Connection IDs and roles
// swapped, sequence numbers as st's (tests and fuzzing make both ends of a session from one
// made-up state this way).
func (st State) Peer() State {
	p := st
	p.IsClient = !st.IsClient
	p.LocalRandom, p.RemoteRandom = st.RemoteRandom, st.LocalRandom
	p.LocalConnectionID, p.RemoteConnectionID = st.RemoteConnectionID, st.LocalConnectionID
	return p
}

// check says why st cannot run a record layer, if it cannot.
func (st *State) check() error {
	switch {
	case !st.HandshakeComplete:
		return errors.New("dtls state: handshake not complete")
	case st.LocalEpoch != 1 || st.RemoteEpoch != 1:
		return fmt.Errorf("dtls state: epochs %d/%d, want 1/1", st.LocalEpoch, st.RemoteEpoch)
	case len(st.MasterSecret) != 48:
		return fmt.Errorf("dtls state: master secret of %d bytes", len(st.MasterSecret))
	case len(st.LocalConnectionID) > 255 || len(st.RemoteConnectionID) > 255:
		return errors.New("dtls state: connection ID over 255 bytes")
	case st.SequenceNumber > maxSeq || st.RemoteSequenceNumber > maxSeq+1:
		return errors.New("dtls state: sequence number past 2^48")
	}
	_, err := suiteFor(st.CipherSuiteID)
	return err
}
