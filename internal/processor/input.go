package processor

import "github.com/coapgw/coapgw/internal/record"

// Input is one record offered to Process, decoded once by the driver that read it (the spool
// adapter in package spoolsource, the SQS consumer from the message envelope). A record the
// driver could not decode is offered all the same, so that it is set aside with its reason and
// counted like any other record that can never be applied: Err says why, Raw holds the bytes as
// the source had them (the local registry keeps them in its set-aside table), and Record holds
// only what the source knows of it (Seq).
type Input struct {
	// Record is the decoded record; Record.Seq is the source's sequence number, and
	// (Record.GW, Record.Seq) identifies the record.
	Record record.Record
	// Raw is the undecodable record's bytes; nil when Err is nil.
	Raw []byte
	// Err, when set, is why the record could not be decoded.
	Err error
}
