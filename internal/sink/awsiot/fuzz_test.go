package awsiot

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/processor"
)

// Fuzz targets for what the sink decodes from AWS IoT (TESTPLAN item 10): the stamps kept in the
// shadow under the reserved key (decodeStamps) and the whole GetThingShadow document
// (parseShadow: reported state + stamps → the document the sink caches).

// fuzzDocs are realistic documents, built the way the processor builds them (DecodeJSON and
// Merge), including deletions, object floors, nesting and extreme times.
func fuzzDocs(tb testing.TB) []*processor.Doc {
	tb.Helper()
	histories := [][]struct {
		ts      int64
		payload string
	}{
		{{1_700_000_000_000_000_000, `{"temp":20,"hum":40}`}, {1_700_000_000_000_000_007, `{"temp":21}`}},
		{{1, `{"env":{"t":1,"h":{"a":2,"b":[1,[2]]}},"x":"s"}`}, {5, `{"env":{"h":{"b":3}}}`}},
		{{1, `{"env":{"hum":1,"t":2},"x":1}`}, {2, `{"env":{"hum":null}}`}},
		{{1, `{"env":{"hum":1,"t":2},"x":1}`}, {2, `{"env":null}`}},
		{{2, `{"a":{"x":1}}`}, {6, `{"a":{"y":3}}`}, {4, `{"a":null}`}},
		{{3, `{"a":null,"b":{"c":null}}`}},
		{{1, `{"q\"k":"caf\u00e9 \"x\"","t\tab":[{"z":null}],"_coapgw2":true}`}},
		{{-5e18, `{"a":1}`}, {4e18, `{"b":2}`}},
		{{1, `{"1":{"2":{"3":{"4":{"5":{"6":1}}}}}}`}},
	}
	docs := []*processor.Doc{processor.NewDoc()}
	for _, h := range histories {
		d := processor.NewDoc()
		for _, s := range h {
			p, err := processor.DecodeJSON([]byte(s.payload), s.ts)
			if err != nil {
				tb.Fatalf("decode %s: %v", s.payload, err)
			}
			d.Merge(p)
		}
		docs = append(docs, d)
	}
	return docs
}

// fuzzSameTree reports where a and b differ in shape, kinds or times ("" if nowhere); values are
// compared too when withValues.
func fuzzSameTree(a, b processor.Node, path string, withValues bool) string {
	if a.Kind() != b.Kind() || a.Time() != b.Time() || a.Len() != b.Len() {
		return fmt.Sprintf("%s: kind %d time %d members %d, want %d %d %d", path, a.Kind(), a.Time(), a.Len(), b.Kind(), b.Time(), b.Len())
	}
	if withValues && !bytes.Equal(a.Value(), b.Value()) {
		return fmt.Sprintf("%s: value %s, want %s", path, a.Value(), b.Value())
	}
	for i := range b.Len() {
		am, bm := a.Member(i), b.Member(i)
		if am.Key() != bm.Key() {
			return fmt.Sprintf("%s: key %q, want %q", path, am.Key(), bm.Key())
		}
		if where := fuzzSameTree(am, bm, path+"."+strconv.Quote(bm.Key()), withValues); where != "" {
			return where
		}
	}
	return ""
}

// fuzzOnlyStampValues reports a value of a stamps document that is not stampsValue.
func fuzzOnlyStampValues(n processor.Node, path string) string {
	if n.Kind() == processor.ValueNode && !bytes.Equal(n.Value(), stampsValue) {
		return fmt.Sprintf("%s: value %q", path, n.Value())
	}
	for i := range n.Len() {
		if where := fuzzOnlyStampValues(n.Member(i), path+"."+strconv.Quote(n.Member(i).Key())); where != "" {
			return where
		}
	}
	return ""
}

// FuzzDecodeStamps: decodeStamps never panics and answers errStamps for what it cannot read; the
// stamps encodeStamps writes decode to the document's exact shape, kinds and times; and any
// stamps it accepts re-encode to stamps that decode to the same tree, after which the encoding
// is a fixed point.
func FuzzDecodeStamps(f *testing.F) {
	for _, d := range fuzzDocs(f) {
		s := encodeStamps(d)
		f.Add(s)
		if len(s) > 2 {
			f.Add(s[:len(s)-1])                        // truncated
			f.Add(s[:len(s)/2] + "_" + s[len(s)/2+1:]) // a character changed
		}
		f.Add(s + "AA") // trailing data
	}
	for _, b := range [][]byte{
		{20, stampObject, 2, 2, 1, 'a', stampValue, 3, 1, 'b', stampDeleted, 0}, // valid, floor
		{20, stampObject, 0, 2, 1, 'b', stampValue, 3, 1, 'a', stampDeleted, 0}, // keys descending
		{20, stampObject, 0, 1, 1, 'a', 3, 3},                                   // unknown kind
		{20, stampValue, 3},                                                     // root not an object
		{20, stampObject, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},                      // huge count
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, stampObject, 0, 1, 1, 'a', stampValue, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, // extreme base and age
	} {
		f.Add(base64.RawURLEncoding.EncodeToString(b))
	}
	f.Add("")
	f.Add("!!")
	f.Add("AA==")

	// decode(encode(x)) == x for the realistic documents, outside the fuzzed function so that
	// it runs once.
	for _, d := range fuzzDocs(f) {
		st, err := decodeStamps(encodeStamps(d))
		if err != nil {
			f.Fatalf("stamps of %s: %v", d.AppendState(nil), err)
		}
		if where := fuzzSameTree(st.Root(), d.Root(), "$", false); where != "" {
			f.Fatalf("stamps of %s differ at %s", d.AppendState(nil), where)
		}
	}

	f.Fuzz(func(t *testing.T, s string) {
		st, err := decodeStamps(s)
		if err != nil {
			if err != errStamps {
				t.Fatalf("error %v, want errStamps", err)
			}
			if st != nil {
				t.Fatal("a document returned with an error")
			}
			return
		}
		if where := fuzzOnlyStampValues(st.Root(), "$"); where != "" {
			t.Fatalf("decoded stamps hold a value: %s", where)
		}
		s2 := encodeStamps(st)
		st2, err := decodeStamps(s2)
		if err != nil {
			t.Fatalf("re-encoded stamps %q rejected: %v", s2, err)
		}
		if where := fuzzSameTree(st2.Root(), st.Root(), "$", true); where != "" {
			t.Fatalf("re-encoded stamps differ at %s", where)
		}
		if s3 := encodeStamps(st2); s3 != s2 {
			t.Fatalf("encoding not stable: %q then %q", s2, s3)
		}
	})
}

// fuzzShadow is the GetThingShadow document of a thing of type typ whose state is d, as the sink
// writes it (state + reserved key with the stamps).
func fuzzShadow(typ string, d *processor.Doc, version, timestamp int64) []byte {
	b := []byte(`{"state":{"reported":`)
	st := d.AppendState(nil)
	b = append(b, st[:len(st)-1]...)
	if len(st) > 2 {
		b = append(b, ',')
	}
	b = strconv.AppendQuote(b, ReservedKey)
	b = append(b, ':')
	b = append(b, metaJSON(typ, d)...)
	return fmt.Appendf(b, `}},"version":%d,"timestamp":%d}`, version, timestamp)
}

func fuzzSink() *Sink {
	return &Sink{
		log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		now: func() time.Time { return time.Unix(1_700_000_000, 0) },
	}
}

// FuzzParseShadow: parseShadow, which reads a shadow from AWS IoT, never panics; the document it
// accepts renders as valid JSON and is what the sink would write back: the shadow the sink writes
// for it (state + stamps) parses, with any other last-update time, to the identical document,
// type and version — the stamps account for everything, nothing falls back to the shadow's time.
func FuzzParseShadow(f *testing.F) {
	for i, d := range fuzzDocs(f) {
		f.Add(fuzzShadow("sensor", d, int64(i+1), 1_700_000_000))
		// Stamps lost or unreadable: everything falls back to the shadow's time.
		f.Add(fmt.Appendf(nil, `{"state":{"reported":%s},"version":3,"timestamp":1700000000}`, d.AppendState(nil)))
		f.Add(bytes.Replace(fuzzShadow("", d, 1, 0), []byte(`"t":"`), []byte(`"t":"!`), 1))
	}
	for _, s := range []string{
		`{"state":{"reported":{"a":1,"_coapgw":{"v":2,"type":"x","t":"AA"}}},"version":1}`, // unknown stamps version
		`{"state":{"reported":{"a":1,"_coapgw":"junk"}},"version":1,"timestamp":5}`,
		`{"state":{"desired":{"a":1}},"metadata":{"reported":{"a":{"timestamp":1}}},"version":9}`,
		`{"state":{"reported":{"a":{"b":null,"c":[1,{"d":null}]}}},"version":1,"timestamp":9223372036}`,
		`{"state":{"reported":[1,2]}}`,
		`{"state":{"reported":{"a":}}}`,
		`null`,
		``,
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, payload []byte) {
		s := fuzzSink()
		th, err := s.parseShadow(payload)
		if err != nil {
			if th != nil {
				t.Fatal("a thing returned with an error")
			}
			return
		}
		state := th.doc.AppendState(nil)
		if !json.Valid(state) {
			t.Fatalf("rendered state is not JSON: %s", state)
		}
		if len(state) != th.doc.Size() {
			t.Fatalf("Size %d, rendered %d", th.doc.Size(), len(state))
		}
		if !json.Valid(th.doc.AppendMetadata(nil)) {
			t.Fatalf("metadata is not JSON: %s", th.doc.AppendMetadata(nil))
		}
		st, err := decodeStamps(encodeStamps(th.doc))
		if err != nil {
			t.Fatalf("stamps of the parsed document rejected: %v", err)
		}
		if where := fuzzSameTree(st.Root(), th.doc.Root(), "$", false); where != "" {
			t.Fatalf("stamps of the parsed document differ at %s", where)
		}
		back := fuzzShadow(th.typ, th.doc, th.version, 42)
		th2, err := s.parseShadow(back)
		if err != nil {
			t.Fatalf("the shadow written back does not parse: %v\n%s", err, back)
		}
		if th2.typ != th.typ || th2.version != th.version {
			t.Fatalf("written back: type %q version %d, want %q %d", th2.typ, th2.version, th.typ, th.version)
		}
		if where := fuzzSameTree(th2.doc.Root(), th.doc.Root(), "$", true); where != "" {
			t.Fatalf("the shadow written back parses to another document, at %s\n%s", where, back)
		}
	})
}
