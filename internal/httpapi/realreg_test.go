package httpapi

import (
	"bytes"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/registry"
)

// realFixture is the API over a real SQLite registry.
type realFixture struct {
	reg  *registry.Registry
	api  *API
	mux  *http.ServeMux
	logs *bytes.Buffer
	seq  uint64
}

func newRealFixture(t testing.TB, cfg Config) *realFixture {
	t.Helper()
	reg, err := registry.Open(filepath.Join(t.TempDir(), "registry.db"), registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	f := &realFixture{reg: reg, mux: http.NewServeMux(), logs: &bytes.Buffer{}}
	f.api = New(cfg, reg, nil, slog.New(slog.NewTextHandler(f.logs, nil)))
	t.Cleanup(f.api.Close)
	f.api.Register(f.mux)
	return f
}

// apply applies recs as one batch (numbered after the previous ones, gateway gw-test) and returns
// the outcomes.
func (f *realFixture) apply(t testing.TB, recs ...record.Record) []string {
	t.Helper()
	for i := range recs {
		f.seq++
		recs[i].Seq = f.seq
	}
	out, err := f.reg.Apply(t.Context(), processortest.Batch(t, recs...))
	if err != nil {
		t.Fatal(err)
	}
	res := make([]string, len(out))
	for i, o := range out {
		res[i] = o.Result.String()
	}
	return res
}

// rec is a JSON record of gw-test.
func realRec(typ, id string, at time.Time, payload string) record.Record {
	return processortest.Rec("gw-test", typ, id, at, payload)
}

// TestThingsSortAPI: GET /api/things sorts on the server over the real registry: walking the
// pages of sort=name gives every thing once, by name, across pages; sort=messages&order=desc
// puts the busiest first; latest=2 adds each thing's newest values with their units; a cursor
// of another sort is refused with 400.
func TestThingsSortAPI(t *testing.T) {
	f := newRealFixture(t, Config{})
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	names := []string{"m-3", "a-1", "z-9", "b-2", "k-5"}
	for i, n := range names {
		for k := range i + 1 { // m-3 1 record ... k-5 5 records, each in its own second
			f.apply(t, realRec("sensor", n, t0.Add(time.Duration(10*i+k)*time.Second), `{"temp":21.5,"mode":"eco"}`))
		}
	}
	pack := realRec("meter", "p-0", t0.Add(time.Minute), `[{"n":"power","u":"W","v":230}]`)
	pack.ContentFormat = record.FormatSenMLJSON
	f.apply(t, pack)

	var got []string
	next := ""
	for range 10 {
		var page registry.ThingPage
		r := call(t, f.mux, "GET", "/api/things?sort=name&limit=2"+next, "localhost")
		if r.code != 200 {
			t.Fatalf("page: %d %s", r.code, r.body)
		}
		r.decode(t, &page)
		for _, th := range page.Things {
			got = append(got, th.Name)
		}
		if page.Next == "" {
			break
		}
		next = "&cursor=" + page.Next
	}
	if want := []string{"a-1", "b-2", "k-5", "m-3", "p-0", "z-9"}; !slices.Equal(got, want) {
		t.Fatalf("sort=name across pages: %v, want %v", got, want)
	}

	var page registry.ThingPage
	r := call(t, f.mux, "GET", "/api/things?sort=messages&order=desc&limit=3&latest=2", "localhost")
	r.decode(t, &page)
	if r.code != 200 || len(page.Things) != 3 || page.Things[0].Name != "k-5" || page.Things[1].Name != "b-2" || page.Things[2].Name != "z-9" {
		t.Fatalf("sort=messages desc: %d %s", r.code, r.body)
	}
	if l := page.Things[0].Latest; len(l) != 2 || l[0].Property != "mode" || string(l[0].Value) != `"eco"` ||
		l[1].Property != "temp" || string(l[1].Value) != "21.5" {
		t.Errorf("k-5 latest: %+v", l)
	}
	r = call(t, f.mux, "GET", "/api/things?type=meter&latest=2", "localhost")
	r.decode(t, &page)
	if len(page.Things) != 1 || len(page.Things[0].Latest) != 1 || page.Things[0].Latest[0].Unit != "W" {
		t.Errorf("p-0 latest: %s", r.body)
	}
	r = call(t, f.mux, "GET", "/api/things?sort=name&limit=2", "localhost")
	r.decode(t, &page)
	r = call(t, f.mux, "GET", "/api/things?sort=type&cursor="+page.Next, "localhost")
	if r.code != 400 {
		t.Errorf("a name cursor with sort=type: %d %s", r.code, r.body)
	}
}
