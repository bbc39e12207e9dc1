package registry

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/record"
)

// Fuzz targets for what the registry decodes from its own database (TESTPLAN item 10): shadow
// blobs (decodeShadow), history log rows (decodeLog), history chunks (decodeChunk), the values of
// an entry (eachValue) and the things page cursor (decodeThingCursor).

// fuzzShadowDocs are realistic shadows, built as Apply builds them (DecodeJSON and Merge).
func fuzzShadowDocs(tb testing.TB) []*processor.Doc {
	tb.Helper()
	histories := [][]string{
		{`{"temp":20.5,"hum":40}`, `{"temp":21}`},
		{`{"env":{"t":1,"h":{"a":2,"b":[1,[2]]}},"x":"s"}`, `{"env":{"h":{"b":3}}}`},
		{`{"env":{"hum":1,"t":2},"x":1}`, `{"env":null}`, `{"env":{"t":3}}`},
		{`{"a":null,"b":{"c":null}}`},
		{`{"q\"k":"caf\u00e9 \"x\"","t\tab":[{"z":null}],"\u0001":true}`}, // NUL is refused (jsonscan.RuleError)
		{`{"1":{"2":{"3":{"4":{"5":{"6":1}}}}}}`},
	}
	docs := []*processor.Doc{processor.NewDoc()}
	for _, h := range histories {
		d := processor.NewDoc()
		for i, payload := range h {
			p, err := processor.DecodeJSON([]byte(payload), 1_700_000_000_000_000_000+int64(i)*1e9)
			if err != nil {
				tb.Fatalf("decode %s: %v", payload, err)
			}
			d.Merge(p)
		}
		docs = append(docs, d)
	}
	return docs
}

// fuzzValuesAreJSON reports whether every value of n is one JSON value in UTF-8, neither null nor
// an object (what a document's values are when the registry writes them: DecodeJSON's).
func fuzzValuesAreJSON(n processor.Node) bool {
	if v := n.Value(); n.Kind() == processor.ValueNode && (!json.Valid(v) || !utf8.Valid(v) || v[0] == '{' || string(v) == "null") {
		return false
	}
	for i := range n.Len() {
		if !fuzzValuesAreJSON(n.Member(i)) {
			return false
		}
	}
	return true
}

// FuzzDecodeShadow: decodeShadow never panics and gives an error or a document, never both; a
// document it accepts re-encodes (AppendBinary, what Apply stores) to a blob that decodes to the
// same document, a fixed point; merging it into its own copy changes nothing; and it renders
// (renderShadow, the API's answer) as valid JSON whenever its values are UTF-8 JSON values.
func FuzzDecodeShadow(f *testing.F) {
	for _, d := range fuzzShadowDocs(f) {
		blob := d.AppendBinary(nil)
		f.Add(blob)
		f.Add(blob[:len(blob)-1])                    // truncated
		f.Add(append(blob[:len(blob):len(blob)], 0)) // trailing byte
		bad := bytes.Clone(blob)
		bad[len(bad)/2] ^= 0x40 // a flipped bit
		f.Add(bad)
		f.Add(append([]byte{2}, blob[1:]...)) // unknown version
	}
	f.Add([]byte{})
	f.Add([]byte{1, 1, 0}) // root is a value
	f.Add([]byte{1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})

	for _, d := range fuzzShadowDocs(f) { // decode(encode(x)) == x
		got, err := decodeShadow(d.AppendBinary(nil))
		if err != nil || !bytes.Equal(got.AppendBinary(nil), d.AppendBinary(nil)) {
			f.Fatalf("shadow %s does not survive its blob: %v", d.AppendState(nil), err)
		}
	}

	f.Fuzz(func(t *testing.T, blob []byte) {
		d, err := decodeShadow(blob)
		if err != nil {
			if d != nil {
				t.Fatal("a document returned with an error")
			}
			return
		}
		enc := d.AppendBinary(nil)
		d2, err := decodeShadow(enc)
		if err != nil {
			t.Fatalf("re-encoded shadow rejected: %v", err)
		}
		if enc2 := d2.AppendBinary(nil); !bytes.Equal(enc2, enc) {
			t.Fatalf("encoding not stable:\n%x\n%x", enc, enc2)
		}
		if d2.Merge(d) {
			t.Fatal("merging the shadow into its own copy changed it")
		}
		out := renderShadow(d, 7, 1_700_000_000)
		if fuzzValuesAreJSON(d.Root()) && !json.Valid(out) {
			t.Fatalf("rendered shadow is not JSON: %s", out)
		}
	})
}

func fuzzEntries() [][]entry {
	v := func(pairs ...float64) []byte {
		var b []byte
		for i := 0; i+1 < len(pairs); i += 2 {
			b = appendValue(b, int64(pairs[i]), pairs[i+1])
		}
		return b
	}
	return [][]entry{
		{{thing: 1, t: 1_700_000_000_000_000_000, vals: v(1, 21.5, 2, 40)}},
		{{thing: 7, t: -5, vals: v(1, 1.5)}, {thing: 1 << 40, t: 1 << 60, vals: v(2, -3, 300, 4)}, {thing: 3, t: 0}},
		{{thing: 2, t: 100, vals: v(1, 1)}, {thing: 2, t: 100, vals: v(1, 2)}, {thing: 2, t: 5000, vals: v(2, math.NaN(), 3, math.Inf(-1))}},
		{{thing: 9, t: math.MinInt64, vals: v(math.MaxInt32, 0)}, {thing: 9, t: math.MaxInt64, vals: v(0, math.Copysign(0, -1))}},
	}
}

// fuzzSameEntries reports where got differs from want ("" if nowhere).
func fuzzSameEntries(got, want []entry) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d entries, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].thing != want[i].thing || got[i].t != want[i].t || !bytes.Equal(got[i].vals, want[i].vals) {
			return fmt.Sprintf("entry %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	return ""
}

type fuzzPair struct {
	prop int64
	bits uint64
}

func fuzzPairs(vals []byte) []fuzzPair {
	var ps []fuzzPair
	eachValue(vals, func(prop int64, v float64) { ps = append(ps, fuzzPair{prop, math.Float64bits(v)}) })
	return ps
}

// fuzzCheckValues: eachValue reads at most len(vals)/9 pairs, and the pairs re-encoded with
// appendValue read back the same.
func fuzzCheckValues(t *testing.T, vals []byte) {
	ps := fuzzPairs(vals)
	if len(ps) > len(vals)/9 {
		t.Fatalf("%d values read from %d bytes", len(ps), len(vals))
	}
	var enc []byte
	for _, p := range ps {
		enc = appendValue(enc, p.prop, math.Float64frombits(p.bits))
	}
	back := fuzzPairs(enc)
	if len(back) != len(ps) {
		t.Fatalf("values %v re-read as %v", ps, back)
	}
	for i := range ps {
		if back[i] != ps[i] {
			t.Fatalf("values %v re-read as %v", ps, back)
		}
	}
}

// FuzzDecodeLog: decodeLog never panics, answers errCorruptHistory for a bad row, and the entries
// of a row it accepts use the whole row, re-encode (appendLogEntry) to a row that decodes to the
// same entries, and go through the writer's in-memory tail (appendEntries, thingEntries)
// unchanged; the values of each entry survive eachValue/appendValue.
func FuzzDecodeLog(f *testing.F) {
	for _, es := range fuzzEntries() {
		var row []byte
		for _, e := range es {
			row = appendLogEntry(row, e.thing, e.t, e.vals)
		}
		got, err := decodeLog(nil, row) // decode(encode(x)) == x
		if err != nil {
			f.Fatal(err)
		}
		if where := fuzzSameEntries(got, es); where != "" {
			f.Fatalf("log row: %s", where)
		}
		f.Add(row)
		f.Add(row[:len(row)-1])
		f.Add(append(row[:len(row):len(row)], 0x80))
	}
	f.Add([]byte{})
	f.Add([]byte{2, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}) // length beyond the row
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})

	f.Fuzz(func(t *testing.T, row []byte) {
		es, err := decodeLog(nil, row)
		if err != nil {
			if !errors.Is(err, errCorruptHistory) {
				t.Fatalf("error %v, want errCorruptHistory", err)
			}
			return
		}
		var enc []byte
		size := 0
		for _, e := range es {
			enc = appendLogEntry(enc, e.thing, e.t, e.vals)
			size += len(e.vals)
			fuzzCheckValues(t, e.vals)
		}
		if size > len(row) {
			t.Fatalf("%d value bytes from a %d-byte row", size, len(row))
		}
		got, err := decodeLog(nil, enc)
		if err != nil {
			t.Fatalf("re-encoded row rejected: %v", err)
		}
		if where := fuzzSameEntries(got, es); where != "" {
			t.Fatalf("re-encoded row: %s", where)
		}
		m := map[int64][]byte{}
		n, err := appendEntries(m, row, 0)
		if err != nil {
			t.Fatalf("appendEntries: %v", err)
		}
		var want []entry
		things := map[int64]bool{}
		for _, e := range es {
			if e.thing > 0 {
				want = append(want, e)
				things[e.thing] = true
			}
		}
		if n != len(want) {
			t.Fatalf("appendEntries: %d entries, want %d", n, len(want))
		}
		for thing := range things {
			var w []entry
			for _, e := range want {
				if e.thing == thing {
					w = append(w, e)
				}
			}
			if where := fuzzSameEntries(thingEntries(nil, m, thing), w); where != "" {
				t.Fatalf("tail of thing %d: %s", thing, where)
			}
		}
	})
}

// FuzzDecodeChunk: decodeChunk never panics, answers errCorruptHistory for a bad chunk, and the
// entries of a chunk it accepts are all of the thing, re-encode (appendChunk, from their first
// entry) to a chunk that decodes to the same entries, and a chunk concatenated with itself (what
// an insert conflict does) decodes to the entries twice.
func FuzzDecodeChunk(f *testing.F) {
	for _, es := range fuzzEntries() {
		chunk := appendChunk(nil, es)
		got, err := decodeChunk(nil, es[0].thing, es[0].t, chunk) // decode(encode(x)) == x
		if err != nil {
			f.Fatal(err)
		}
		for i := range es {
			es[i].thing = es[0].thing
		}
		if where := fuzzSameEntries(got, es); where != "" {
			f.Fatalf("chunk: %s", where)
		}
		f.Add(es[0].t, chunk)
		f.Add(es[0].t, chunk[:len(chunk)-1])
		f.Add(int64(math.MaxInt64), chunk)
	}
	f.Add(int64(0), []byte{})
	f.Add(int64(5), []byte{0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add(int64(-1), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})

	const thing = 42
	f.Fuzz(func(t *testing.T, first int64, chunk []byte) {
		es, err := decodeChunk(nil, thing, first, chunk)
		if err != nil {
			if !errors.Is(err, errCorruptHistory) {
				t.Fatalf("error %v, want errCorruptHistory", err)
			}
			return
		}
		if len(es) == 0 {
			if len(chunk) != 0 {
				t.Fatalf("no entries from %d bytes", len(chunk))
			}
			return
		}
		for _, e := range es {
			if e.thing != thing {
				t.Fatalf("entry of thing %d", e.thing)
			}
			fuzzCheckValues(t, e.vals)
		}
		enc := appendChunk(nil, es)
		got, err := decodeChunk(nil, thing, es[0].t, enc)
		if err != nil {
			t.Fatalf("re-encoded chunk rejected: %v", err)
		}
		if where := fuzzSameEntries(got, es); where != "" {
			t.Fatalf("re-encoded chunk: %s", where)
		}
		twice, err := decodeChunk(nil, thing, first, append(chunk[:len(chunk):len(chunk)], chunk...))
		if err != nil {
			t.Fatalf("chunk concatenated with itself rejected: %v", err)
		}
		if where := fuzzSameEntries(twice, append(es[:len(es):len(es)], es...)); where != "" {
			t.Fatalf("chunk concatenated with itself: %s", where)
		}
	})
}

// FuzzThingCursor: decodeListCursor never panics and answers ErrInvalidCursor for what it cannot
// read (a cursor of another sort or order included); decode(encode(seen, id)) == (seen, id) for
// any pair of a numeric sort, and of names for the name and type sorts; and a cursor it accepts
// re-encodes to a cursor that decodes to the same keyset.
func FuzzThingCursor(f *testing.F) {
	for _, p := range [][2]int64{{1_700_000_000, 1}, {0, 0}, {-1, math.MaxInt64}, {math.MinInt64, math.MinInt64}} {
		f.Add(encodeListCursor(SortLastSeen, OrderDesc, []any{p[0], p[1]}), p[0], p[1], "dev-1")
	}
	f.Add(encodeListCursor(SortType, OrderAsc, []any{"sensor", "dev-1"}), int64(0), int64(0), "a:b_c-d")
	f.Add(encodeListCursor(SortName, OrderDesc, []any{"dev-1"}), int64(0), int64(0), "x")
	for _, s := range []string{"t3.lastSeen.desc.1", "t3.lastSeen.desc.1.2.3", "t2.1.2", "t3.lastSeen.desc.+1.-0",
		"t3.lastSeen.desc.1.99999999999999999999", "t3.lastSeen.desc..", "t3.lastSeen.desc.1.2\n", "t3.name.asc.", "t3.type.asc.a"} {
		f.Add(base64.RawURLEncoding.EncodeToString([]byte(s)), int64(1), int64(2), "n")
	}
	f.Add("dDIuMS4y=", int64(0), int64(0), "") // padded
	f.Add("!!", int64(0), int64(0), "")
	f.Add("", int64(0), int64(0), "")

	f.Fuzz(func(t *testing.T, c string, seen, id int64, name string) {
		for _, sort := range ThingSorts {
			for _, order := range []string{OrderAsc, OrderDesc} {
				vals := []any{seen, id}
				switch sort {
				case SortName:
					vals = []any{name}
				case SortType:
					vals = []any{name, name}
				}
				if record.ValidName(name) || listSorts[sort].col != "" {
					got, err := decodeListCursor(encodeListCursor(sort, order, vals), sort, order)
					if err != nil || !slices.Equal(got, vals) {
						t.Fatalf("%s %s: cursor of %v decodes to %v, %v", sort, order, vals, got, err)
					}
					other := OrderAsc
					if order == OrderAsc {
						other = OrderDesc
					}
					if _, err := decodeListCursor(encodeListCursor(sort, order, vals), sort, other); err != ErrInvalidCursor {
						t.Fatalf("%s %s: a cursor of the other order: %v, want ErrInvalidCursor", sort, order, err)
					}
				}
				got, err := decodeListCursor(c, sort, order)
				if err != nil {
					if err != ErrInvalidCursor || got != nil {
						t.Fatalf("(%v, %v), want ErrInvalidCursor", got, err)
					}
					continue
				}
				c2 := encodeListCursor(sort, order, got)
				got2, err := decodeListCursor(c2, sort, order)
				if err != nil || !slices.Equal(got, got2) {
					t.Fatalf("cursor %q → %v → %q → %v, %v", c, got, c2, got2, err)
				}
			}
		}
	})
}
