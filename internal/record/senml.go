package record

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
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

// ParseSenML appends to dst the readings of a SenML pack of Content-Format cf (110 or 112),
// received at now (Unix nanoseconds).
func ParseSenML(dst []Reading, cf uint16, payload []byte, now int64) ([]Reading, error) {
	z := senmlResolver{now: now, dst: dst, vals: make([]byte, 0, 64+len(payload))}
	return parseSenML(&z, cf, payload)
}

// SenMLPack holds a pack's readings and their values' bytes for reuse: Parse is ParseSenML
// without allocating the slices again once they have grown. Readings and their Values are valid
// until the next Parse.
type SenMLPack struct {
	Readings []Reading
	vals     []byte
	scratch  []byte
	names    map[string]string // see senmlResolver.str
}

// Parse replaces p.Readings with the readings of a SenML pack, as ParseSenML.
func (p *SenMLPack) Parse(cf uint16, payload []byte, now int64) error {
	_, err := p.parse(cf, payload, now, false)
	return err
}

// ParseTo is Parse for a caller that keeps the readings: they are appended to dst and their values
// written to a new buffer, so they stay valid after the next Parse (the pack's interned names and
// scratch are still reused). p.Readings is left empty.
func (p *SenMLPack) ParseTo(dst []Reading, cf uint16, payload []byte, now int64) ([]Reading, error) {
	if p.names == nil {
		p.names = make(map[string]string)
	}
	n := len(dst)
	z := senmlResolver{now: now, dst: dst, vals: make([]byte, 0, 64+len(payload)), names: p.names, scratch: p.scratch[:0]}
	rs, err := parseSenML(&z, cf, payload)
	p.scratch = z.scratch
	if err != nil {
		return rs[:n], err
	}
	return rs, nil
}

// Check is Parse for a caller that only asks whether the pack is accepted and its JSON form
// certainly keeps the shadow rules (what JSONFormKeepsRules says of Parse's readings): every
// rule of Parse is checked, but no reading is kept (p.Readings is left empty).
func (p *SenMLPack) Check(cf uint16, payload []byte, now int64) (keepsRules bool, err error) {
	return p.parse(cf, payload, now, true)
}

func (p *SenMLPack) parse(cf uint16, payload []byte, now int64, check bool) (keeps bool, err error) {
	clear(p.Readings[:cap(p.Readings)]) // drop the last pack's strings, a failed one's too
	if !check && cap(p.vals) < 64+len(payload) {
		p.vals = make([]byte, 0, 64+len(payload))
	}
	if p.names == nil {
		p.names = make(map[string]string)
	}
	z := senmlResolver{now: now, dst: p.Readings[:0], vals: p.vals[:0], names: p.names, check: check, scratch: p.scratch[:0]}
	rs, err := parseSenML(&z, cf, payload)
	p.Readings, p.scratch = rs, z.scratch
	if err != nil {
		p.Readings = rs[:0]
		return false, err
	}
	return !z.unsure, nil
}

// JSONFormKeepsRules reports whether the JSON form of readings (SenMLToJSON) certainly keeps the
// shadow rules (jsonscan/rules.go), without building it: names are nonempty ASCII (§4.5.1) and
// unique in the form; numbers are finite float64s written exactly; so only a string value can
// break a rule, by holding U+0000 (written \u0000) or bytes that are not UTF-8. False means
// "not certainly": the caller checks the JSON form itself, for its exact error.
func JSONFormKeepsRules(readings []Reading) bool {
	for i := range readings {
		v := readings[i].Value
		if len(v) > 0 && v[0] == '"' && (bytes.Contains(v, nulEscape) || !utf8.Valid(v)) {
			return false
		}
	}
	return true
}

var nulEscape = []byte(`\u0000`)

// parseSenML is ParseSenML with the resolver to use (its readings so far, buffers and options).
func parseSenML(rs *senmlResolver, cf uint16, payload []byte) ([]Reading, error) {
	dst := rs.dst
	n := len(dst)
	switch cf {
	case FormatSenMLJSON:
		if err := readSenMLJSON(payload, rs); err != nil {
			return dst, err
		}
	case FormatSenMLCBOR:
		if err := readSenMLCBOR(payload, rs); err != nil {
			return dst, err
		}
	default:
		return dst, ErrFormat
	}
	if len(rs.dst) == n && rs.n == 0 {
		return dst, errors.New("SenML pack has no records")
	}
	return rs.dst, nil
}

// senmlResolver resolves a pack's records one after the other (§4.6): the base fields in force,
// and the readings so far, whose values share one buffer.
type senmlResolver struct {
	bn, bu     []byte // in force; they point into the payload (or a string's unescaped copy)
	bt, bv, bs float64
	now        int64
	dst        []Reading
	vals       []byte            // appended to only: a reading's Value stays valid when it grows
	names      map[string]string // SenMLPack's: names and units made strings once
	scratch    []byte            // a name put together
	check      bool              // SenMLPack.Check's: no readings, only their count
	n          int               // check: the readings
	unsure     bool              // check: a string value may break a shadow rule
}

// str returns b as a string, the one made before for the same text when there is a names map
// (bounded: names and units repeat from pack to pack, other text need not).
func (z *senmlResolver) str(b []byte) string {
	if z.names == nil || len(b) > 64 {
		return string(b)
	}
	if s, ok := z.names[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(z.names) < 256 {
		z.names[s] = s
	}
	return s
}

func (z *senmlResolver) add(i int, r *senmlFields) error {
	if r.has&hasBVer != 0 && r.bver > 10 {
		return fmt.Errorf("SenML version %v not supported", r.bver)
	}
	if r.has&hasBN != 0 {
		z.bn = r.bn
	}
	if r.has&hasBU != 0 {
		z.bu = r.bu
	}
	if r.has&hasBT != 0 {
		z.bt = r.bt
	}
	if r.has&hasBV != 0 {
		z.bv = r.bv
	}
	if r.has&hasBS != 0 {
		z.bs = r.bs
	}
	if !validSenMLName(z.bn, r.n) {
		return fmt.Errorf("SenML record %d: bad name %.32q", i, z.name(r.n))
	}
	var rd Reading
	if !z.check { // Check needs neither names nor units
		rd.Name = z.name(r.n)
		if unit := r.u; len(unit) > 0 || len(z.bu) > 0 {
			if len(unit) == 0 {
				unit = z.bu
			}
			rd.Unit = z.str(unit)
		}
	}
	t := z.bt + r.t
	if !finite(t) || !finite(z.bv) || !finite(z.bs) || math.Abs(t) >= 1e10 {
		return fmt.Errorf("SenML record %d: bad time or base value", i)
	}
	if t < relativeLimit {
		rd.Time = z.now + int64(math.Round(t*1e9))
	} else {
		rd.Time = int64(math.Round(t * 1e9))
	}
	if rd.Time > z.now+MaxFuture {
		return fmt.Errorf("SenML record %d: time %.0f s in the future", i, float64(rd.Time-z.now)/1e9)
	}
	start := len(z.vals)
	var raw []byte // a number's SenML JSON text, when it is the value
	switch {
	case z.check && r.has&hasV != 0 && r.vraw != nil && z.bv == 0:
		// Check, and the value is v alone: within float64's range, as read, so finite
	case z.check && r.has&hasS != 0 && r.sraw != nil && z.bs == 0 && r.has&(hasV|hasVS|hasVB|hasVD|hasVDB) == 0:
	case r.has&hasV != 0:
		if r.vraw != nil {
			r.v, _ = strconv.ParseFloat(string(r.vraw), 64) // scanned as a number
			if z.bv == 0 {
				raw = r.vraw
			}
		}
		rd.Num, rd.IsNum = z.bv+r.v, true
	case r.has&hasVS != 0:
		z.text(r.vs, r.plain&hasVS != 0)
	case r.has&hasVB != 0:
		if !z.check {
			z.vals = strconv.AppendBool(z.vals, r.vb)
		}
	case r.has&hasVD != 0:
		z.text(r.vd, r.plain&hasVD != 0)
	case r.has&hasVDB != 0:
		if !z.check {
			z.vals = append(z.vals, '"')
			z.vals = append(base64.RawURLEncoding.AppendEncode(z.vals, r.vdb), '"')
		}
	case r.has&hasS != 0:
		if r.sraw != nil {
			r.s, _ = strconv.ParseFloat(string(r.sraw), 64)
			if z.bs == 0 {
				raw = r.sraw
			}
		}
		rd.Num, rd.IsNum = z.bs+r.s, true
	default:
		return fmt.Errorf("SenML record %d (%.32s) has no value", i, z.name(r.n))
	}
	if rd.IsNum {
		if !finite(rd.Num) {
			return fmt.Errorf("SenML record %d: value out of range", i)
		}
		switch {
		case z.check:
		case raw != nil && shortestNumber(raw): // SenML JSON's text is already the value's form
			z.vals = append(z.vals, raw...)
		default:
			z.vals = AppendJSONNumber(z.vals, rd.Num, 64)
		}
	}
	if !z.check {
		rd.Value = z.vals[start:len(z.vals):len(z.vals)]
	}
	if z.check {
		z.n++ // Check keeps no readings
	} else {
		z.dst = append(z.dst, rd)
	}
	return nil
}

// name is the resolved name of a record named n: the base name and n.
func (z *senmlResolver) name(n []byte) string {
	if len(z.bn) == 0 {
		return z.str(n)
	}
	z.scratch = append(append(z.scratch[:0], z.bn...), n...)
	return z.str(z.scratch)
}

// text writes a string value as JSON; for Check, it only notes whether the JSON form may break a
// shadow rule, as JSONFormKeepsRules would find in the written value: its escaped form holds
// \u0000 exactly when the text holds NUL or a backslash before u0000, and plain ASCII text (no
// control character, no backslash) holds neither.
func (z *senmlResolver) text(s []byte, plain bool) {
	if !z.check {
		z.vals = appendQuoted(z.vals, s)
		return
	}
	if !plain && (bytes.IndexByte(s, 0) >= 0 || bytes.Contains(s, nulEscape) || !utf8.Valid(s)) {
		z.unsure = true
	}
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

func appendQuoted[T string | []byte](dst []byte, s T) []byte {
	dst = append(dst, '"')
	return append(appendJSONString(dst, s), '"')
}

// validSenMLName is RFC 8428 §4.5.1 for the name bn+n: a letter or digit, then letters, digits
// and "-:./_".
func validSenMLName(bn, n []byte) bool {
	if len(bn) == 0 {
		bn, n = n, nil
	}
	if len(bn) == 0 || !isAlnum(bn[0]) {
		return false
	}
	return senmlNameChars(bn[1:]) && senmlNameChars(n)
}

func senmlNameChars(s []byte) bool {
	for _, c := range s {
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
	if len(readings) > 16 {
		readings = Latest(readings)
	}
	dst = append(dst, '{')
	first := true
	for i, r := range readings {
		if !LatestAt(readings, i) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendQuoted(dst, r.Name)
		dst = append(dst, ':')
		dst = append(dst, r.Value...)
	}
	return append(dst, '}')
}

// LatestAt reports whether readings[i] is its name's latest (of equal times, the later one) in
// readings: Latest without allocating, for a short pack.
func LatestAt(readings []Reading, i int) bool {
	r := &readings[i]
	for j := range readings {
		if o := &readings[j]; j != i && o.Name == r.Name && (o.Time > r.Time || o.Time == r.Time && j > i) {
			return false
		}
	}
	return true
}
