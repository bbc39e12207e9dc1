package record

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

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

// senmlRecord is one SenML record as sent: JSON labels and CBOR integer labels (§6).
type senmlRecord struct {
	BVer *float64 `json:"bver" cbor:"-1,keyasint"`
	BN   *string  `json:"bn" cbor:"-2,keyasint"`
	BT   *float64 `json:"bt" cbor:"-3,keyasint"`
	BU   *string  `json:"bu" cbor:"-4,keyasint"`
	BV   *float64 `json:"bv" cbor:"-5,keyasint"`
	BS   *float64 `json:"bs" cbor:"-6,keyasint"`
	N    string   `json:"n" cbor:"0,keyasint"`
	U    string   `json:"u" cbor:"1,keyasint"`
	V    *float64 `json:"v" cbor:"2,keyasint"`
	VS   *string  `json:"vs" cbor:"3,keyasint"`
	VB   *bool    `json:"vb" cbor:"4,keyasint"`
	S    *float64 `json:"s" cbor:"5,keyasint"`
	T    float64  `json:"t" cbor:"6,keyasint"`
	VD   *string  `json:"vd" cbor:"-"`
	VDB  []byte   `json:"-" cbor:"8,keyasint"`
}

var senmlCBOR = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  4,
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
	var pack []senmlRecord
	switch cf {
	case FormatSenMLJSON:
		if !utf8.Valid(payload) {
			return dst, errors.New("SenML JSON is not UTF-8")
		}
		if err := json.Unmarshal(payload, &pack); err != nil {
			return dst, fmt.Errorf("invalid SenML JSON: %s", jsonReason(err))
		}
		if bytes.Contains(payload, []byte(`_"`)) {
			if err := mustUnderstand(payload); err != nil {
				return dst, err
			}
		}
	case FormatSenMLCBOR:
		if err := senmlCBOR.Unmarshal(payload, &pack); err != nil {
			return dst, fmt.Errorf("invalid SenML CBOR: %s", cborReason(err))
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
		if r.BVer != nil && *r.BVer > 10 {
			return dst, fmt.Errorf("SenML version %v not supported", *r.BVer)
		}
		if r.BN != nil {
			bn = *r.BN
		}
		if r.BU != nil {
			bu = *r.BU
		}
		if r.BT != nil {
			bt = *r.BT
		}
		if r.BV != nil {
			bv = *r.BV
		}
		if r.BS != nil {
			bs = *r.BS
		}
		rd := Reading{Name: bn + r.N, Unit: r.U}
		if rd.Unit == "" {
			rd.Unit = bu
		}
		if !validSenMLName(rd.Name) {
			return dst, fmt.Errorf("SenML record %d: bad name %.32q", i, rd.Name)
		}
		t := bt + r.T
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
		case r.V != nil:
			rd.Num, rd.IsNum = bv+*r.V, true
		case r.VS != nil:
			rd.Value = appendQuoted(nil, []byte(*r.VS))
		case r.VB != nil:
			rd.Value = strconv.AppendBool(nil, *r.VB)
		case r.VD != nil:
			rd.Value = appendQuoted(nil, []byte(*r.VD))
		case r.VDB != nil:
			rd.Value = appendQuoted(nil, base64.RawURLEncoding.AppendEncode(nil, r.VDB))
		case r.S != nil:
			rd.Num, rd.IsNum = bs+*r.S, true
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

func jsonReason(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%s is %s, want %s", te.Field, te.Value, te.Type)
	}
	return err.Error()
}

// mustUnderstand refuses a SenML JSON pack with a field whose label ends in "_" (§4.4).
func mustUnderstand(payload []byte) error {
	var pack []map[string]json.RawMessage
	if err := json.Unmarshal(payload, &pack); err != nil {
		return fmt.Errorf("invalid SenML JSON: %s", jsonReason(err))
	}
	for i, r := range pack {
		for k := range r {
			if len(k) > 0 && k[len(k)-1] == '_' {
				return fmt.Errorf("SenML record %d: must-understand field %.32q not supported", i, k)
			}
		}
	}
	return nil
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
