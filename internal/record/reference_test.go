package record

import (
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// The decoders that the walks replaced, kept as references for the fuzz tests: fxamacker/cbor's
// well-formedness check (CBORToJSON's pre-pass before) and its typed decode of a SenML CBOR pack
// (ParseSenML's before).

// cborWellformed checks CBOR well-formedness (RFC 8949 §5.3.1) with fxamacker/cbor, with the
// bounds CBORToJSON's walk keeps. (Its Wellformed does not check text strings' UTF-8.)
var cborWellformed = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		MaxNestedLevels:  cborMaxNesting,
		MaxArrayElements: 1 << 16,
		MaxMapPairs:      1 << 16,
		IndefLength:      cbor.IndefLengthAllowed,
		TagsMd:           cbor.TagsAllowed,
		UTF8:             cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// refSenMLRecord is one SenML CBOR record as fxamacker/cbor decodes it (§6: integer labels).
type refSenMLRecord struct {
	BVer *float64 `cbor:"-1,keyasint"`
	BN   *string  `cbor:"-2,keyasint"`
	BT   *float64 `cbor:"-3,keyasint"`
	BU   *string  `cbor:"-4,keyasint"`
	BV   *float64 `cbor:"-5,keyasint"`
	BS   *float64 `cbor:"-6,keyasint"`
	N    string   `cbor:"0,keyasint"`
	U    string   `cbor:"1,keyasint"`
	V    *float64 `cbor:"2,keyasint"`
	VS   *string  `cbor:"3,keyasint"`
	VB   *bool    `cbor:"4,keyasint"`
	S    *float64 `cbor:"5,keyasint"`
	T    float64  `cbor:"6,keyasint"`
	VD   []byte   `cbor:"8,keyasint"`
}

func (r *refSenMLRecord) fields() senmlFields {
	f := senmlFields{n: []byte(r.N), u: []byte(r.U), t: r.T, vdb: r.VD}
	setF := func(p *float64, dst *float64, bit uint16) {
		if p != nil {
			*dst, f.has = *p, f.has|bit
		}
	}
	setS := func(p *string, dst *[]byte, bit uint16) {
		if p != nil {
			*dst, f.has = []byte(*p), f.has|bit
		}
	}
	setF(r.BVer, &f.bver, hasBVer)
	setF(r.BT, &f.bt, hasBT)
	setF(r.BV, &f.bv, hasBV)
	setF(r.BS, &f.bs, hasBS)
	setF(r.V, &f.v, hasV)
	setF(r.S, &f.s, hasS)
	setS(r.BN, &f.bn, hasBN)
	setS(r.BU, &f.bu, hasBU)
	setS(r.VS, &f.vs, hasVS)
	if r.VB != nil {
		f.vb, f.has = *r.VB, f.has|hasVB
	}
	if r.VD != nil {
		f.has |= hasVDB
	}
	return f
}

var refSenMLCBOR = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  senmlMaxNesting,
		MaxArrayElements: senmlMaxRecords,
		MaxMapPairs:      senmlMaxPairs,
		TagsMd:           cbor.TagsForbidden,
		UTF8:             cbor.UTF8RejectInvalid,
		NaN:              cbor.NaNDecodeForbidden,
		Inf:              cbor.InfDecodeForbidden,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// refParseSenMLCBOR is ParseSenML of a SenML CBOR pack as it was, through fxamacker/cbor.
func refParseSenMLCBOR(payload []byte, now int64) ([]Reading, error) {
	var recs []refSenMLRecord
	if err := refSenMLCBOR.Unmarshal(payload, &recs); err != nil {
		return nil, err
	}
	z := senmlResolver{now: now, vals: make([]byte, 0, 64+len(payload))}
	for i := range recs {
		f := recs[i].fields()
		if err := z.add(i, &f); err != nil {
			return nil, err
		}
	}
	if len(z.dst) == 0 {
		return nil, fmt.Errorf("SenML pack has no records")
	}
	return z.dst, nil
}

// stricterThanReference are the walk's errors for packs fxamacker/cbor's typed decode accepted:
// the deliberate differences (senml_cbor.go).
var stricterThanReference = []string{
	"must be a number", // a simple value such as 16, which fxamacker/cbor takes as the number 16
	"not UTF-8",        // in an unknown field's value, which fxamacker/cbor skips unread
}

// FuzzSenMLCBORReference: the SenML CBOR walk accepts exactly what fxamacker/cbor's typed decode
// accepted (but for the stricter rules listed above), with the same readings.
func FuzzSenMLCBORReference(f *testing.F) {
	for _, s := range []string{
		"83a2006474656d7002f94d60a2006368756d021828a20063706164037818787878787878787878787878787878787878787878787878",
		"81a3006161020100616262", "81a200616102f97e00", "81a2006161c11a00000000", "9fa200616102f4ff",
		"81a4216364782f22fb41dad2a4ac00000000616102010763782f", "81a3006161080507f6", "81bf00616103617aff",
		"81a2006161087f4101ff", "81a3006161020161780001", "81a30061610201616100", "81a20061610264ff",
		"81a200616102f0", "81a300616102016178f6", "81a400616102011907001907000",
	} {
		b, _ := hex.DecodeString(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := ParseSenML(nil, FormatSenMLCBOR, b, now)
		want, refErr := refParseSenMLCBOR(b, now)
		switch {
		case err != nil && refErr != nil:
			return
		case err != nil:
			for _, s := range stricterThanReference {
				if strings.Contains(err.Error(), s) {
					return
				}
			}
			t.Fatalf("%x: refused (%v), fxamacker/cbor accepted %+v", b, err, want)
		case refErr != nil:
			t.Fatalf("%x: accepted %+v, fxamacker/cbor refused (%v)", b, got, refErr)
		}
		if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
			t.Fatalf("%x: readings\n%+v\nfxamacker/cbor's\n%+v", b, got, want)
		}
	})
}
