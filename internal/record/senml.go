package record

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/fxamacker/cbor/v2"
)

// SenML (RFC 8428) payloads, JSON (110) and CBOR (112), are packs of readings: each resolved
// (§4.6) into a Reading with its name, unit, time and value. The rules:
//
//   - the base name, time, unit, value and sum (bn, bt, bu, bv, bs) apply to their record and
//     the ones after it until a record sets them again; a bver above 10 is refused;
//   - a resolved name must follow §4.5.1 (first character a letter or digit, then letters,
//     digits and "-:./_");
//   - a resolved time below 2^28 is relative to the time the gateway received the message
//     (0, or no time at all, is "now"); from 2^28 on it is Unix seconds;
//   - a record's value is v (plus bv), vs, vb or vd (bytes in SenML CBOR: written as base64url,
//     as SenML JSON carries them); a record with none of them and a sum (s plus bs) has the sum
//     as its value; a record with no value at all, NaN or an infinity is refused;
//   - a reading more than MaxFuture after the time the gateway received the message is refused
//     (a device clock gone wrong); an old reading is accepted: it loses to newer state in the
//     shadow and is dropped from history by its retention;
//   - several readings of one name are a batch: all go to history at their own times, and the
//     one with the latest time (of equal times, the later in the pack) is the name's value in
//     the JSON form, {"name": value, ...}, which is what the shadow gets;
//   - fields whose label ends in "_" (must-understand, §4.4) in SenML JSON are refused; other
//     unknown fields are ignored.
//
// The errors are short and meant for a 4.00 diagnostic.

// MaxFuture is how far past the time the gateway received a SenML pack one of its readings may
// be.
const MaxFuture = 10 * 60 * 1e9 // nanoseconds

// relativeLimit: times below it are relative (RFC 8428 §4.5.3).
const relativeLimit = 1 << 28

// Reading is one resolved SenML record.
type Reading struct {
	Name  string
	Unit  string  // "" when none
	Time  int64   // Unix nanoseconds
	Value []byte  // compact JSON: a number, a string, true or false
	Num   float64 // the value, when it is a number (IsNum)
	IsNum bool
}

// senmlRecord is one SenML CBOR record as sent (§6: integer labels); fxamacker/cbor decodes it.
type senmlRecord struct {
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

// fields is r as senmlFields.
func (r *senmlRecord) fields() senmlFields {
	f := senmlFields{n: r.N, u: r.U, t: r.T, vdb: r.VD}
	setF := func(p *float64, dst *float64, bit uint16) {
		if p != nil {
			*dst, f.has = *p, f.has|bit
		}
	}
	setS := func(p *string, dst *string, bit uint16) {
		if p != nil {
			*dst, f.has = *p, f.has|bit
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

var senmlCBOR = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  16,
		MaxArrayElements: 1 << 16,
		MaxMapPairs:      1 << 10,
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

// ParseSenML appends to dst the readings of a SenML pack of Content-Format cf (110 or 112),
// received at now (Unix nanoseconds).
func ParseSenML(dst []Reading, cf uint16, payload []byte, now int64) ([]Reading, error) {
	var pack []senmlFields
	switch cf {
	case FormatSenMLJSON:
		var err error
		if pack, err = readSenMLJSON(make([]senmlFields, 0, 8), payload); err != nil {
			return dst, err
		}
	case FormatSenMLCBOR:
		var recs []senmlRecord
		if err := senmlCBOR.Unmarshal(payload, &recs); err != nil {
			return dst, fmt.Errorf("invalid SenML CBOR: %s", cborReason(err))
		}
		pack = make([]senmlFields, len(recs))
		for i := range recs {
			pack[i] = recs[i].fields()
		}
	default:
		return dst, ErrFormat
	}
	if len(pack) == 0 {
		return dst, errors.New("SenML pack has no records")
	}
	var bn, bu string
	var bt, bv, bs float64
	for i := range pack {
		r := &pack[i]
		if r.has&hasBVer != 0 && r.bver > 10 {
			return dst, fmt.Errorf("SenML version %v not supported", r.bver)
		}
		if r.has&hasBN != 0 {
			bn = r.bn
		}
		if r.has&hasBU != 0 {
			bu = r.bu
		}
		if r.has&hasBT != 0 {
			bt = r.bt
		}
		if r.has&hasBV != 0 {
			bv = r.bv
		}
		if r.has&hasBS != 0 {
			bs = r.bs
		}
		rd := Reading{Name: bn + r.n, Unit: r.u}
		if rd.Unit == "" {
			rd.Unit = bu
		}
		if !validSenMLName(rd.Name) {
			return dst, fmt.Errorf("SenML record %d: bad name %.32q", i, rd.Name)
		}
		t := bt + r.t
		if !finite(t) || !finite(bv) || !finite(bs) || math.Abs(t) >= 1e10 {
			return dst, fmt.Errorf("SenML record %d: bad time or base value", i)
		}
		if t < relativeLimit {
			rd.Time = now + int64(math.Round(t*1e9))
		} else {
			rd.Time = int64(math.Round(t * 1e9))
		}
		if rd.Time > now+MaxFuture {
			return dst, fmt.Errorf("SenML record %d: time %.0f s in the future", i, float64(rd.Time-now)/1e9)
		}
		switch {
		case r.has&hasV != 0:
			rd.Num, rd.IsNum = bv+r.v, true
		case r.has&hasVS != 0:
			rd.Value = appendQuoted(nil, []byte(r.vs))
		case r.has&hasVB != 0:
			rd.Value = strconv.AppendBool(nil, r.vb)
		case r.has&hasVD != 0:
			rd.Value = appendQuoted(nil, []byte(r.vd))
		case r.has&hasVDB != 0:
			rd.Value = appendQuoted(nil, base64.RawURLEncoding.AppendEncode(nil, r.vdb))
		case r.has&hasS != 0:
			rd.Num, rd.IsNum = bs+r.s, true
		default:
			return dst, fmt.Errorf("SenML record %d (%.32s) has no value", i, rd.Name)
		}
		if rd.IsNum {
			if !finite(rd.Num) {
				return dst, fmt.Errorf("SenML record %d: value out of range", i)
			}
			rd.Value = AppendJSONNumber(nil, rd.Num, 64)
		}
		dst = append(dst, rd)
	}
	return dst, nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

func appendQuoted(dst, s []byte) []byte {
	dst = append(dst, '"')
	return append(appendJSONString(dst, s), '"')
}

// validSenMLName is RFC 8428 §4.5.1: a letter or digit, then letters, digits and "-:./_".
func validSenMLName(s string) bool {
	if s == "" || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '-' && c != ':' && c != '.' && c != '/' && c != '_' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// Latest returns, of readings, the one per name with the latest time (of equal times, the later
// one), in the order of their names' first appearance.
func Latest(readings []Reading) []Reading {
	out := make([]Reading, 0, len(readings))
	var index map[string]int // for a long pack
	if len(readings) > 16 {
		index = make(map[string]int, len(readings))
	}
	for _, r := range readings {
		var i int
		if index != nil {
			j, ok := index[r.Name]
			if i = -1; ok {
				i = j
			} else {
				index[r.Name] = len(out)
			}
		} else {
			i = slices.IndexFunc(out, func(o Reading) bool { return o.Name == r.Name })
		}
		switch {
		case i < 0:
			out = append(out, r)
		case r.Time >= out[i].Time:
			out[i] = r
		}
	}
	return out
}

// SenMLToJSON appends the JSON form of a SenML pack: one object with each name's latest value.
func SenMLToJSON(dst []byte, readings []Reading) []byte {
	dst = append(dst, '{')
	for i, r := range Latest(readings) {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendQuoted(dst, []byte(r.Name))
		dst = append(dst, ':')
		dst = append(dst, r.Value...)
	}
	return append(dst, '}')
}
