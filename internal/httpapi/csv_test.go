package httpapi

import (
	"net/http"
	"strings"
	"testing"
)

func TestHistoryCSV(t *testing.T) {
	f := newFixture(t, Config{}) // now = t0+1h
	f.seed()
	f.store.things["sensor-1"].units = map[string]string{"temp": "Cel"}
	r := f.get(t, "/api/things/sensor-1/history.csv")
	if r.code != 200 || r.header.Get("Content-Type") != "text/csv; charset=utf-8" ||
		r.header.Get("Content-Disposition") != `attachment; filename="sensor-1-history.csv"` {
		t.Fatalf("history.csv: %d %v", r.code, r.header)
	}
	want := "time,property,value,unit\n" +
		"2026-03-01T12:00:00.000Z,env.hum,40,\n" +
		"2026-03-01T12:00:00.000Z,temp,20.5,Cel\n" +
		"2026-03-01T12:01:00.000Z,temp,21,Cel\n"
	if got := strings.ReplaceAll(string(r.body), "\r\n", "\n"); got != want {
		t.Errorf("history.csv =\n%s\nwant\n%s", got, want)
	}

	// The query parameters of /history apply; bad ones are 400 as there.
	r = f.get(t, "/api/things/sensor-1/history.csv?property=temp&since=59m30s&limit=5")
	if got := strings.ReplaceAll(string(r.body), "\r\n", "\n"); r.code != 200 || got != "time,property,value,unit\n2026-03-01T12:01:00.000Z,temp,21,Cel\n" {
		t.Errorf("filtered history.csv: %d %q", r.code, got)
	}
	if q := f.store.lastHist; q.Property != "temp" || q.Limit != 5 {
		t.Errorf("query = %+v", q)
	}
	for target, code := range map[string]int{
		"/api/things/sensor-1/history.csv?limit=0":   400,
		"/api/things/sensor-1/history.csv?bogus=1":   400,
		"/api/things/ghost/history.csv":              404,
		"/api/things/door:7/history.csv":             200,
		"/api/things/bad%20name/history.csv":         400,
		"/api/things/sensor-1/history.csv?since=abc": 400,
	} {
		if r := f.get(t, target); r.code != code {
			t.Errorf("%s: %d %s, want %d", target, r.code, r.body, code)
		}
	}
	if r := f.do(t, http.MethodHead, "/api/things/sensor-1/history.csv"); r.code != 200 || len(r.body) != 0 {
		t.Errorf("HEAD: %d %q", r.code, r.body)
	}
	if r := f.do(t, http.MethodPost, "/api/things/sensor-1/history.csv"); r.code != 405 {
		t.Errorf("POST: %d", r.code)
	}
}
