package processor

import (
	"bytes"
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
	rs, err := pk.ParseTo(make([]record.Reading, 0, maxRecords(uint16(f), payload)), uint16(f), payload, ts)
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
// (what SetValue would build). The readings are put in order by index, so that no member is
// moved once written.
func senmlDoc(rs []record.Reading) *Doc {
	latest := rs
	if len(rs) > 16 {
		latest = record.Latest(rs) // LatestAt is quadratic
	}
	var buf [16]int
	order := buf[:0]
	for i := range latest {
		if len(rs) > 16 || record.LatestAt(latest, i) {
			order = append(order, i)
		}
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(latest[a].Name, latest[b].Name) })
	kids := make([]member, len(order))
	for k, i := range order {
		// A reading's value is a number, a string, true or false: never null, an object or an
		// array (SetValue's cases).
		r := &latest[i]
		kids[k] = member{key: r.Name, node: node{kind: kindValue, ts: r.Time, val: r.Value}}
	}
	return &Doc{root: node{kids: kids}}
}

// senmlPacks are DecodeReadings' reusable parse buffers (and the strings of the names they saw).
var senmlPacks = sync.Pool{New: func() any { return new(record.SenMLPack) }}

// maxRecords is about how many records a SenML pack holds, at least, to size its readings: the
// objects of a SenML JSON pack, the bytes of a SenML CBOR pack that could start a map, at most
// 256 (a longer pack's readings grow as they are read).
func maxRecords(cf uint16, payload []byte) int {
	if cf == record.FormatSenMLJSON {
		return min(bytes.Count(payload, []byte{'{'}), 256)
	}
	n := 0
	for _, c := range payload {
		if c>>5 == 5 {
			n++
		}
	}
	return min(n, 256)
}
