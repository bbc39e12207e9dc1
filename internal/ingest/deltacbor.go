package ingest

import (
	"bytes"
	"encoding/json"

	"github.com/fxamacker/cbor/v2"
)

// cborDet is CBOR's core deterministic encoding (RFC 8949 §4.2.1): the same delta gives the
// same bytes.
var cborDet, _ = cbor.CoreDetEncOptions().EncMode()

// deltaCBOR renders a thing's delta message, {"state":{<delta>},"version":N} in JSON as Deltas
// gives it, in CBOR for a device that asks for Content-Format 60: the same map, integral numbers
// as CBOR integers, other numbers as floats (in their shortest exact width). It allocates; the
// device API calls it only for a thing with a pending delta and a device that asked for CBOR.
func deltaCBOR(msg []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(msg))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return cborDet.Marshal(cborValue(v))
}

func cborValue(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = cborValue(e)
		}
	case []any:
		for i, e := range x {
			x[i] = cborValue(e)
		}
	}
	return v
}
