package processor

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/coapgw/coapgw/internal/record"
)

// Batch is what a Sink applies: every record of the batch (Items, in the source's order) and one
// Update per thing, coalescing that thing's records.
type Batch struct {
	Items   []Item
	Updates []Update
}

// Item is one record of a batch.
type Item struct {
	Seq    uint64        // the source's sequence number; (Record.GW, Seq) identifies the record
	Record record.Record // decoded; of an undecodable record (see Input) only what the source knew
	Raw    []byte        // the encoded record, kept only when it could not be decoded
	Doc    *Doc          // the payload's properties, every leaf stamped with Record.ReceivedAt
	// Readings are a SenML pack's readings (ReadingsDecoder), each with its own time and unit,
	// for history; the Doc's leaves then carry the readings' times. Nil for other formats.
	Readings []record.Reading
	Err      error // set: the record failed permanently before the sink and must be set aside
}

// Update is the coalesced change of one thing: all the batch's valid records of (Type, Thing).
type Update struct {
	Type, Thing string
	Items       []int // indexes into Batch.Items, by received_at, then seq
	Doc         *Doc  // the Items' documents merged; shared with the Item when there is only one
}

// Result is what became of one record.
type Result uint8

// Results of a record.
const (
	Applied   Result = iota + 1 // its properties are reflected in the sink
	Duplicate                   // the sink had already applied it (redelivery)
	SetAside                    // it failed permanently; Outcome.Reason says why
	// Deferred: it could not be applied now and was not (its thing's control-plane budget is
	// spent, or AWS throttled it); Outcome.After says when to try again. The driver hands it
	// back to its source without counting it as a failure of the batch. Only the AWS sink
	// defers.
	Deferred
)

func (r Result) String() string {
	switch r {
	case Applied:
		return "applied"
	case Duplicate:
		return "duplicate"
	case SetAside:
		return "set_aside"
	case Deferred:
		return "deferred"
	}
	return fmt.Sprintf("Result(%d)", uint8(r))
}

// Outcome is the sink's verdict on one record.
type Outcome struct {
	Result Result
	Reason string        // for SetAside and Deferred
	After  time.Duration // for Deferred: try again after this long
}

type thingKey struct{ typ, thing string }

// NewBatch validates, decodes the payloads of and coalesces inputs (records, see Input). It never
// fails: a record that cannot be used becomes an Item with Err set.
func NewBatch(inputs []Input, decoders Decoders) *Batch {
	b := &Batch{Items: make([]Item, len(inputs))}
	index := make(map[thingKey]int)
	for i := range inputs {
		in, it := &inputs[i], &b.Items[i]
		it.Seq = in.Record.Seq
		it.Record = in.Record
		if in.Err != nil {
			it.Raw = in.Raw
			it.Err = fmt.Errorf("undecodable record: %w", in.Err)
			continue
		}
		it.Err = validate(&it.Record)
		if it.Err == nil {
			it.Doc, it.Readings, it.Err = decode(decoders, &it.Record)
		}
		if it.Err != nil {
			continue
		}
		k := thingKey{it.Record.Type, it.Record.ID}
		u, ok := index[k]
		if !ok {
			u = len(b.Updates)
			index[k] = u
			b.Updates = append(b.Updates, Update{Type: k.typ, Thing: k.thing})
		}
		b.Updates[u].Items = append(b.Updates[u].Items, i)
	}
	for i := range b.Updates {
		u := &b.Updates[i]
		u.Doc = b.Coalesce(u.Items)
	}
	return b
}

// Batch is the batch the processor applies for inputs: decoded with its decoders (what Process
// and Run apply). The registry's retry of set-aside records builds its batches with it, so that
// a retried record is decoded as it would be now.
func (p *Processor) Batch(inputs []Input) *Batch { return p.newBatch(inputs) }

// Coalesce sorts items (indexes into b.Items, each with a Doc) by received_at then seq, and
// returns their documents merged. A single item's document is returned as it is.
func (b *Batch) Coalesce(items []int) *Doc {
	slices.SortStableFunc(items, func(x, y int) int {
		rx, ry := &b.Items[x].Record, &b.Items[y].Record
		if c := rx.ReceivedAt.Compare(ry.ReceivedAt); c != 0 {
			return c
		}
		return cmp.Compare(rx.Seq, ry.Seq)
	})
	if len(items) == 1 {
		return b.Items[items[0]].Doc
	}
	d := NewDoc()
	for _, i := range items {
		d.Merge(b.Items[i].Doc)
	}
	return d
}

func validate(r *record.Record) error {
	if !record.ValidName(r.Type) {
		return fmt.Errorf("thing type name %q does not match %s", r.Type, record.NamePattern)
	}
	if !record.ValidName(r.ID) {
		return fmt.Errorf("thing name %q does not match %s", r.ID, record.NamePattern)
	}
	return nil
}

func decode(decoders Decoders, r *record.Record) (*Doc, []record.Reading, error) {
	dec := decoders[r.ContentFormat]
	if dec == nil {
		if r.ContentFormat == record.NoContentFormat {
			return nil, nil, fmt.Errorf("payload without content format not supported")
		}
		return nil, nil, fmt.Errorf("content format %d not supported", r.ContentFormat)
	}
	var d *Doc
	var rs []record.Reading
	var err error
	if rd, ok := dec.(ReadingsDecoder); ok {
		d, rs, err = rd.DecodeReadings(r.Payload, r.ReceivedAt.UnixNano())
	} else {
		d, err = dec.Decode(r.Payload, r.ReceivedAt.UnixNano())
	}
	if err != nil {
		return nil, nil, err
	}
	if reason := d.CheckLimits(); reason != "" {
		return nil, nil, fmt.Errorf("payload alone: %s", reason)
	}
	return d, rs, nil
}

// receivedRange returns the oldest and newest received_at of the batch's decodable records.
func (b *Batch) receivedRange() (oldest, newest time.Time) {
	for i := range b.Items {
		t := b.Items[i].Record.ReceivedAt
		if b.Items[i].Raw != nil || t.IsZero() {
			continue
		}
		if oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
		if t.After(newest) {
			newest = t
		}
	}
	return oldest, newest
}
