// Package spoolsource feeds the processor from the gateway's spool in local mode: Source reads
// the spool's entries, decodes each one once into a record (package record) and hands them to
// processor.Run as processor.Input; Run's acknowledgements move the spool's cursor. An entry that
// is not a record reaches the processor all the same, with its bytes and the reason, so that it is
// set aside and counted.
//
// The spool knows nothing of records and the processor nothing of the spool; this package is
// where the two meet. It has no metrics or configuration of its own.
package spoolsource

import (
	"context"
	"errors"
	"fmt"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
)

// Log is what Source needs of a spool; spool.Log (Disk and Memory) implements it.
type Log interface {
	Next(ctx context.Context, max int) ([]spool.Entry, error)
	Commit(seq uint64) error
	Stats() spool.Stats
}

var _ Log = spool.Log(nil)

// Source is a processor.Source reading a spool.
type Source struct {
	log Log
}

var _ processor.Source = (*Source)(nil)

// New returns a source reading log from its cursor.
func New(log Log) *Source { return &Source{log: log} }

// Next implements processor.Source: it returns up to max of the spool's next entries, decoded.
// When the spool is closed its error wraps both processor.ErrSourceClosed and spool.ErrClosed.
func (s *Source) Next(ctx context.Context, max int) ([]processor.Input, error) {
	es, err := s.log.Next(ctx, max)
	if err != nil {
		if errors.Is(err, spool.ErrClosed) {
			return nil, fmt.Errorf("%w: %w", processor.ErrSourceClosed, err)
		}
		return nil, err
	}
	return Decode(es), nil
}

// Commit implements processor.Source: the spool's cursor moves to seq.
func (s *Source) Commit(seq uint64) error { return s.log.Commit(seq) }

// Depth is the number of durable entries not yet committed, which lets processor.Run tell
// "caught up" from "between two batches".
func (s *Source) Depth() int64 { return s.log.Stats().Depth }

// Decode decodes spool entries into the processor's inputs, one for one. An entry that is not a
// record becomes an input with its sequence number, its bytes (Raw) and the reason (Err).
func Decode(es []spool.Entry) []processor.Input {
	in := make([]processor.Input, len(es))
	for i, e := range es {
		x := &in[i]
		if err := record.Decode(e.Data, &x.Record); err != nil {
			x.Record, x.Raw, x.Err = record.Record{}, e.Data, err
		}
		x.Record.Seq = e.Seq
	}
	return in
}
