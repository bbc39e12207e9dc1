// Package processortest has helpers for tests of the processor and of its sinks: records as the
// processor takes them (Inputs) or encoded as the spool holds them (Entries), batches built from
// records, a fake Sink, RunSinkConformance, the behaviour every Sink must show, and ProcessCPU
// for benchmarks.
package processortest

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
)

// Rec returns a JSON record of thing id (type typ) from gateway gw, received at at.
func Rec(gw, typ, id string, at time.Time, payload string) record.Record {
	return record.Record{
		GW: gw, Type: typ, ID: id, ReceivedAt: at, ContentFormat: record.FormatJSON,
		Payload: []byte(payload), Peer: "192.0.2.1:5683",
	}
}

// Entry encodes r as the spool holds it, with sequence number seq.
func Entry(t testing.TB, seq uint64, r record.Record) spool.Entry {
	t.Helper()
	data, err := record.Append(nil, &r)
	if err != nil {
		t.Fatal(err)
	}
	return spool.Entry{Seq: seq, Data: data}
}

// Entries encodes recs; each gets its Seq, or, where Seq is 0, the previous one plus one
// (starting at 1).
func Entries(t testing.TB, recs ...record.Record) []spool.Entry {
	t.Helper()
	es := make([]spool.Entry, len(recs))
	var seq uint64
	for i, r := range recs {
		if r.Seq != 0 {
			seq = r.Seq
		} else {
			seq++
		}
		es[i] = Entry(t, seq, r)
	}
	return es
}

// Inputs returns recs as the processor takes them, numbered as Entries does.
func Inputs(recs ...record.Record) []processor.Input {
	in := make([]processor.Input, len(recs))
	var seq uint64
	for i, r := range recs {
		if r.Seq != 0 {
			seq = r.Seq
		} else {
			seq++
		}
		in[i].Record = r
		in[i].Record.Seq = seq
	}
	return in
}

// Batch builds the batch the processor would hand to its sink for recs (numbered as Entries
// does), with the default decoders.
func Batch(t testing.TB, recs ...record.Record) *processor.Batch {
	t.Helper()
	return processor.NewBatch(Inputs(recs...), processor.DefaultDecoders())
}

// Sink is a fake processor.Sink keeping each thing's merged state in memory. It recognises
// redelivered records by (gw, seq). Set the hooks before the first Apply.
type Sink struct {
	// Fail, if set, is called at the start of every Apply with the call number (from 0); an error
	// fails that call, as a transient failure would. It may block until ctx ends.
	Fail func(ctx context.Context, call int) error
	// Reject, if set, returns a reason for an item the sink must set aside ("" = apply it).
	Reject func(it *processor.Item) string

	mu      sync.Mutex
	calls   int
	batches []*processor.Batch
	seen    map[key]bool
	state   map[string]*processor.Doc
	counts  map[string]int
}

type key struct {
	gw  string
	seq uint64
}

var _ processor.Sink = (*Sink)(nil)

// Apply implements processor.Sink.
func (s *Sink) Apply(ctx context.Context, b *processor.Batch) ([]processor.Outcome, error) {
	s.mu.Lock()
	call := s.calls
	s.calls++
	s.mu.Unlock()
	if s.Fail != nil {
		if err := s.Fail(ctx, call); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen, s.state, s.counts = map[key]bool{}, map[string]*processor.Doc{}, map[string]int{}
	}
	s.batches = append(s.batches, b)
	out := make([]processor.Outcome, len(b.Items))
	for i := range b.Items {
		it := &b.Items[i]
		k := key{it.Record.GW, it.Seq}
		switch {
		case s.seen[k]:
			out[i] = processor.Outcome{Result: processor.Duplicate}
		case it.Err != nil:
			out[i] = processor.Outcome{Result: processor.SetAside, Reason: it.Err.Error()}
		case s.Reject != nil && s.Reject(it) != "":
			out[i] = processor.Outcome{Result: processor.SetAside, Reason: s.Reject(it)}
		}
		s.seen[k] = true
	}
	for _, u := range b.Updates {
		for _, i := range u.Items {
			if out[i].Result != 0 {
				continue
			}
			out[i] = processor.Outcome{Result: processor.Applied}
			d := s.state[u.Thing]
			if d == nil {
				d = processor.NewDoc()
				s.state[u.Thing] = d
			}
			d.Merge(b.Items[i].Doc)
			s.counts[u.Thing]++
		}
	}
	return out, nil
}

// Calls is the number of Apply calls so far, failed ones included.
func (s *Sink) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Batches returns the batches applied successfully.
func (s *Sink) Batches() []*processor.Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*processor.Batch(nil), s.batches...)
}

// State returns a thing's reported state as compact JSON, "" if it has none.
func (s *Sink) State(thing string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.state[thing]
	if d == nil {
		return ""
	}
	return string(d.AppendState(nil))
}

// Count returns how many records of a thing were applied.
func (s *Sink) Count(thing string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[thing]
}

// ProcessCPU is the process's user and system CPU time in nanoseconds, for benchmarks that
// report CPU per operation (unlike wall time, it does not grow while other processes hold the
// machine's cores).
func ProcessCPU() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
