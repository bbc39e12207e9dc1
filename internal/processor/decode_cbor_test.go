package processor

import (
	"encoding/hex"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/coapgw/coapgw/internal/record"
)

// decodeCBORViaJSON is DecodeCBOR as it was, the reference for the direct decoder: the payload's
// JSON form (record.CBORToJSON), decoded by DecodeJSON.
func decodeCBORViaJSON(payload []byte, ts int64) (*Doc, error) {
	js, err := record.CBORToJSON(make([]byte, 0, 2*len(payload)+16), payload, MaxShadowDepth)
	if err != nil {
		return nil, err
	}
	return DecodeJSON(js, ts)
}

// cborSeeds are CBOR payloads for the fuzz target and the table test, as hex: every kind of
// value, and every way of being refused.
var cborSeeds = []string{
	"a0",           // {}
	"a16174f94d60", // {"t":21.5} as a half
	"a36174fb400ae147ae147ae16168183062667765312e342e32", // doubles, integers, text
	"bf61619f0102ffff",   // indefinite map and array
	"a1616182a161780180", // an array holding a map and an empty array
	"a2616101616101",     // a duplicate key
	"a2616201616101",     // keys out of order
	"a96161016162026163036164046165056166066167076168086169f6", // nine keys, one null
	"a9616901616802616703616604616505616406616307616208616101", // nine keys, descending, then a repeat below
	"aa616901616802616703616604616505616406616307616208616101616901",
	"a1616bf6",                                 // null: a deletion
	"a1616ba1616ca1616da1616ea1616fa1617001",   // six levels
	"a1616ba1616ca1616da1616ea1616fa1617081a0", // seven
	"a1616b818181818101",                       // an array nested five deep
	"a1616b81818181818101",                     // six deep inside an object: seven levels
	"a16174c11a5f000000",                       // a tag
	"a1617441ff",                               // a byte string
	"a16174f7",                                 // undefined
	"a16174f97e00",                             // NaN
	"a16174f97c00",                             // infinity
	"a10101",                                   // a non-text key
	"a16001",                                   // an empty key
	"a1617400",                                 // trailing data after: see the next
	"a161740000",                               // trailing data
	"a161741bffffffffffffffff",                 // 2^64-1
	"a161743bffffffffffffffff",                 // -2^64
	"a1617f6161616262ff01",                     // an indefinite key
	"a161746361005a",                           // NUL in text
	"a1616b62c328",                             // invalid UTF-8
	"a261226162615c6163",                       // keys that JSON escapes
	"a1611f01",                                 // a control character as a key
	"a1616bf8ff",                               // a simple value
	"a1616bfc",                                 // reserved additional information
	"bf616101",                                 // an indefinite map without its break
	"a2",                                       // truncated
	"80",                                       // not a map
	"a1616ba2616101616101",                     // a duplicate key in a nested map
	"a1616b81a2616101616101",                   // a duplicate key in a map inside an array
	// a duplicate 34-byte key that JSON escapes: the message shows 32 bytes of its JSON form
	"a27822227878787878787878787878787878787878787878787878787878787878787878780178222278787878787878787878787878787878787878787878787878787878787878787802",
	"a1616bfbbff0000000000000", // -1.0
	"a1616bfb8000000000000000", // -0.0
	"a1616bfa4b800001",         // a single above 2^24
}

func decodeBoth(t *testing.T, b []byte) {
	t.Helper()
	want, werr := decodeCBORViaJSON(b, 42)
	got, err := DecodeCBOR(b, 42)
	if fmt.Sprintf("%T %v", err, err) != fmt.Sprintf("%T %v", werr, werr) {
		t.Fatalf("%x: error %T %v, want %T %v", b, err, err, werr, werr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%x: document %s, want %s", b, dumpDoc(got), dumpDoc(want))
	}
}

// dumpDoc shows a document with its deletions, times and array depths.
func dumpDoc(d *Doc) string {
	if d == nil {
		return "nil"
	}
	var sb strings.Builder
	var walk func(n *node)
	walk = func(n *node) {
		fmt.Fprintf(&sb, "{k%d t%d d%d %q [", n.kind, n.ts, n.depth, n.val)
		for i := range n.kids {
			fmt.Fprintf(&sb, "%q:", n.kids[i].key)
			walk(&n.kids[i].node)
		}
		sb.WriteString("]}")
	}
	walk(&d.root)
	return sb.String()
}

// TestDecodeCBORReference: the direct decoder gives the reference's document and error for each
// seed, and the seeds cover both outcomes.
func TestDecodeCBORReference(t *testing.T) {
	accepted, refused := 0, 0
	for _, s := range cborSeeds {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		decodeBoth(t, b)
		if _, err := DecodeCBOR(b, 1); err == nil {
			accepted++
		} else {
			refused++
		}
	}
	if accepted < 10 || refused < 15 {
		t.Fatalf("seeds: %d accepted, %d refused", accepted, refused)
	}
}

// FuzzDecodeCBOR: whatever the bytes, DecodeCBOR accepts exactly what the reference
// (CBORToJSON, then DecodeJSON) accepts, with the same document, or refuses it with the same
// error.
func FuzzDecodeCBOR(f *testing.F) {
	for _, s := range cborSeeds {
		b, _ := hex.DecodeString(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { decodeBoth(t, b) })
}

// DecodeCBORViaJSON is the reference decoder, for BenchmarkDecodeFormats.
var DecodeCBORViaJSON Decoder = DecoderFunc(decodeCBORViaJSON)
