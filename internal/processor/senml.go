package processor

import (
	"slices"
	"strings"
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
	return senmlDoc(rs), rs, nil
}

// senmlDoc is the document of a pack's readings: each name's latest value at its reading's time
// (what SetValue would build, the members put in order once).
func senmlDoc(rs []record.Reading) *Doc {
	latest := rs
	if len(rs) > 16 {
		latest = record.Latest(rs) // LatestAt is quadratic
	}
	d := &Doc{root: node{kids: make([]member, 0, len(latest))}}
	sorted := true
	for i := range latest {
		r := &latest[i]
		if len(rs) <= 16 && !record.LatestAt(latest, i) {
			continue
		}
		kids := d.root.kids
		if k := len(kids); k > 0 && kids[k-1].key >= r.Name {
			sorted = false
		}
		// A reading's value is a number, a string, true or false: never null, an object or an
		// array (SetValue's cases).
		d.root.kids = append(kids, member{key: r.Name, node: node{kind: kindValue, ts: r.Time, val: r.Value}})
	}
	if !sorted {
		slices.SortFunc(d.root.kids, func(a, b member) int { return strings.Compare(a.key, b.key) })
	}
	return d
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
