package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/record"
)

func (e *env) desire(name, body string) (string, error) {
	e.t.Helper()
	b, err := e.r.UpdateDesired(e.t.Context(), name, []byte(body))
	return string(b), err
}

func (e *env) delta(name string) string {
	return string(e.r.Delta([]byte(name)))
}

// TestDesiredDelta: desired state merges with AWS semantics, the delta is what differs from the
// reported state (recursively, arrays whole), a report of the desired values clears it, and it
// all survives a restart.
func TestDesiredDelta(t *testing.T) {
	e := newEnv(t, Options{})
	e.send(rec("sensor", "a", 10, `{"interval":30,"cfg":{"mode":"eco","th":[1,2]},"temp":20}`))
	if _, err := e.desire("nope", `{"state":{"desired":{"x":1}}}`); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown thing: %v", err)
	}
	if got := e.delta("a"); got != "" {
		t.Fatalf("delta before any desired state: %s", got)
	}
	got, err := e.desire("a", `{"state":{"desired":{"interval":60,"cfg":{"mode":"eco","th":[1,3]},"fw":"beta","gone":null}}}`)
	if err != nil {
		t.Fatal(err)
	}
	ts := at(1000).Unix()
	want := fmt.Sprintf(`{"state":{"desired":{"cfg":{"mode":"eco","th":[1,3]},"fw":"beta","interval":60},`+
		`"reported":{"cfg":{"mode":"eco","th":[1,2]},"interval":30,"temp":20},`+
		`"delta":{"cfg":{"th":[1,3]},"fw":"beta","interval":60}},`+
		`"metadata":{"desired":{"cfg":{"mode":{"timestamp":%d},"th":[{"timestamp":%d},{"timestamp":%d}]},"fw":{"timestamp":%d},"interval":{"timestamp":%d}},`+
		`"reported":{"cfg":{"mode":{"timestamp":%d},"th":[{"timestamp":%d},{"timestamp":%d}]},"interval":{"timestamp":%d},"temp":{"timestamp":%d}}},`+
		`"version":2,"timestamp":%d}`, ts, ts, ts, ts, ts, at(10).Unix(), at(10).Unix(), at(10).Unix(), at(10).Unix(), at(10).Unix(), ts)
	if got != want {
		t.Fatalf("update answer\n got %s\nwant %s", got, want)
	}
	if _, raw := e.shadow("a"); raw != want {
		t.Fatalf("shadow\n got %s\nwant %s", raw, want)
	}
	if got, want := e.delta("a"), `{"state":{"cfg":{"th":[1,3]},"fw":"beta","interval":60},"version":2}`; got != want {
		t.Fatalf("delta %s, want %s", got, want)
	}

	// A version that is not the shadow's is refused; null deletes a desired property.
	if _, err := e.desire("a", `{"state":{"desired":{"fw":null}},"version":1}`); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("stale version: %v", err)
	}
	if _, err := e.desire("a", `{"state":{"desired":{"fw":null}},"version":2}`); err != nil {
		t.Fatal(err)
	}
	if got, want := e.delta("a"), `{"state":{"cfg":{"th":[1,3]},"interval":60},"version":3}`; got != want {
		t.Fatalf("delta %s, want %s", got, want)
	}

	// The device reports part of it (1 equals 1.0 as numbers), then the rest.
	e.send(rec("sensor", "a", 20, `{"interval":60.0}`))
	if got, want := e.delta("a"), `{"state":{"cfg":{"th":[1,3]}},"version":4}`; got != want {
		t.Fatalf("delta after a partial report %s, want %s", got, want)
	}
	e.reopen()
	if got, want := e.delta("a"), `{"state":{"cfg":{"th":[1,3]}},"version":4}`; got != want {
		t.Fatalf("delta after reopen %s, want %s", got, want)
	}
	e.send(rec("sensor", "a", 30, `{"cfg":{"th":[1,3]}}`))
	if got := e.delta("a"); got != "" {
		t.Fatalf("delta after the device reported everything: %s", got)
	}
	d, raw := e.shadow("a")
	if d.Version != 5 || strings.Contains(raw, `"delta"`) || !strings.Contains(raw, `"desired":{"cfg"`) {
		t.Fatalf("shadow after the report: %s", raw)
	}

	// Desired: null removes the desired state.
	if _, err := e.desire("a", `{"state":{"desired":null}}`); err != nil {
		t.Fatal(err)
	}
	if _, raw := e.shadow("a"); strings.Contains(raw, `"desired"`) {
		t.Fatalf("shadow after desired null: %s", raw)
	}
}

func TestDesiredRefused(t *testing.T) {
	e := newEnv(t, Options{})
	e.send(rec("sensor", "a", 10, `{"temp":20}`))
	big := `{"state":{"desired":{"s":"` + strings.Repeat("x", 9000) + `"}}}`
	for _, body := range []string{``, `{}`, `{"state":{}}`, `{"state":{"desired":[1]}}`, `{"state":{"desired":{"a":1},"reported":{"a":1}}}`,
		`{"state":{"desired":{"a":1}},"x":1}`, `{"state":{"desired":{"a":{"b":{"c":{"d":{"e":{"f":{"g":1}}}}}}}}}`, big} {
		var de *DesiredError
		if _, err := e.desire("a", body); !errors.As(err, &de) {
			t.Errorf("%.60s: %v, want a DesiredError", body, err)
		}
	}
	if d, _ := e.shadow("a"); d.Version != 1 {
		t.Fatalf("a refused update changed the version to %d", d.Version)
	}
}

// TestOnDelta: Options.OnDelta is called for a desired update and for a report that changes the
// delta, not for a report that leaves it as it was.
func TestOnDelta(t *testing.T) {
	var calls []string
	e := newEnv(t, Options{OnDelta: func(name string) { calls = append(calls, name) }})
	e.send(rec("sensor", "a", 10, `{"x":1,"y":1}`), rec("sensor", "b", 10, `{"x":1}`))
	if _, err := e.desire("a", `{"state":{"desired":{"x":2,"y":2}}}`); err != nil {
		t.Fatal(err)
	}
	e.send(rec("sensor", "a", 20, `{"t":5}`)) // the delta's state is the same (a new version)
	e.send(rec("sensor", "b", 20, `{"x":3}`)) // no desired state
	e.send(rec("sensor", "a", 30, `{"x":2}`)) // y is left
	e.send(rec("sensor", "a", 40, `{"y":2}`)) // nothing is left
	e.send(rec("sensor", "a", 50, `{"y":3}`)) // y differs again
	if got, want := strings.Join(calls, ","), "a,a,a,a"; got != want {
		t.Fatalf("OnDelta calls %s, want %s", got, want)
	}
}

// BenchmarkDelta: the device API's lookup of a thing's delta among 200 things with desired
// state, for a thing without one (the common case) and one with one.
func BenchmarkDelta(b *testing.B) {
	e := newEnv(b, Options{})
	var recs []record.Record
	for i := range 200 {
		recs = append(recs, rec("sensor", fmt.Sprintf("d-%03d", i), 10, `{"x":1}`))
	}
	e.send(recs...)
	for i := range 200 {
		if _, err := e.desire(fmt.Sprintf("d-%03d", i), `{"state":{"desired":{"x":2}}}`); err != nil {
			b.Fatal(err)
		}
	}
	for _, name := range []string{"dev-1", "d-042"} {
		b.Run(name, func(b *testing.B) {
			key := []byte(name)
			b.ReportAllocs()
			for b.Loop() {
				e.r.Delta(key)
			}
		})
	}
}

// FuzzDelta: for any desired and reported states the delta is a JSON object (or nothing), and a
// device that reports it gets a reported state with no delta left: what clears the delta in AWS.
func FuzzDelta(f *testing.F) {
	for _, s := range [][2]string{
		{`{"a":1,"b":{"c":[1,2],"d":"x"}}`, `{"a":1.0,"b":{"c":[1,3]}}`},
		{`{"a":{"b":1}}`, `{"a":2}`},
		{`{"a":null,"b":true}`, `{"b":false,"z":{"y":1}}`},
		{`{}`, `{"a":1}`},
		{`{"a":[{"x":1}]}`, `{"a":[{"x":1}]}`},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, desired, reported string) {
		des, err := processor.DecodeJSON([]byte(desired), 10)
		if err != nil {
			return
		}
		rep, err := processor.DecodeJSON([]byte(reported), 5)
		if err != nil {
			return
		}
		d := appendDelta(nil, des.Root(), rep.Root())
		if len(d) == 0 {
			return
		}
		if !json.Valid(d) || d[0] != '{' {
			t.Fatalf("delta %q is not a JSON object", d)
		}
		patch, err := processor.DecodeJSON(d, 20)
		if err != nil {
			t.Fatalf("delta %q does not decode: %v", d, err)
		}
		rep.Merge(patch)
		if again := appendDelta(nil, des.Root(), rep.Root()); len(again) != 0 {
			t.Fatalf("after reporting the delta %s, the delta is %s", d, again)
		}
	})
}
