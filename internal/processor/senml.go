package processor

import (
	"slices"
	"sync"

	"github.com/coapgw/coapgw/internal/record"
)

// A ReadingsDecoder is a Decoder whose payloads carry timestamped readings (SenML): besides the
// document it returns every reading, for history. The document's leaves carry the readings'
// own times, not the record's.
type ReadingsDecoder interface {
	Decoder
	DecodeReadings(payload []byte, ts int64) (*Doc, []record.Reading, error)
}

// SenMLDecoder decodes SenML packs of its Content-Format (record.FormatSenMLJSON or
// record.FormatSenMLCBOR), received at ts, as record.ParseSenML resolves them: the document holds
// each name's latest value at that reading's time; the readings are all of them.
type SenMLDecoder uint16

var _ ReadingsDecoder = SenMLDecoder(record.FormatSenMLJSON)

// Decode returns the pack's document.
func (f SenMLDecoder) Decode(payload []byte, ts int64) (*Doc, error) {
	d, _, err := f.DecodeReadings(payload, ts)
	return d, err
}

// DecodeReadings returns the pack's document and readings.
func (f SenMLDecoder) DecodeReadings(payload []byte, ts int64) (*Doc, []record.Reading, error) {
	pk := senmlPacks.Get().(*record.SenMLPack)
	err := pk.Parse(uint16(f), payload, ts)
	rs := ownReadings(pk.Readings)
	senmlPacks.Put(pk)
	if err != nil {
		return nil, nil, err
	}
	// The shadow rules (DecodeJSON's) apply to the pack's JSON form, as the device API checks it;
	// the readings tell when it certainly keeps them, and the form is checked only otherwise.
	if !record.JSONFormKeepsRules(rs) {
		if _, err := DecodeJSON(record.SenMLToJSON(nil, rs), ts); err != nil {
			return nil, nil, err
		}
	}
	latest := record.Latest(rs)
	d := NewDoc()
	d.Grow(len(latest))
	for _, r := range latest {
		if err := d.SetValue(r.Name, r.Time, r.Value); err != nil {
			return nil, nil, err
		}
	}
	return d, rs, nil
}

// senmlPacks are DecodeReadings' reusable parse buffers (and the strings of the names they saw).
var senmlPacks = sync.Pool{New: func() any { return new(record.SenMLPack) }}

// ownReadings copies readings out of a SenMLPack: one slice, the values in one buffer (the
// strings are immutable and stay shared).
func ownReadings(readings []record.Reading) []record.Reading {
	if len(readings) == 0 {
		return nil
	}
	n := 0
	for i := range readings {
		n += len(readings[i].Value)
	}
	out := slices.Clone(readings)
	vals := make([]byte, 0, n)
	for i := range out {
		start := len(vals)
		vals = append(vals, out[i].Value...)
		out[i].Value = vals[start:len(vals):len(vals)]
	}
	return out
}
