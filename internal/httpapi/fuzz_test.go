package httpapi

import (
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseQuery fuzzes the API's query-string parsing (TESTPLAN item 10): parseQuery with the
// parameter sets of the routes, then every parameter parser of those routes (limit, name, prefix,
// cursor, property, since). Nothing panics; an error message is short, valid UTF-8 and free of
// control characters whatever the input (user values only appear through quote); what is accepted
// keeps its documented range and form, and a since the store gets is representable in Unix
// nanoseconds (the store compares times as such); an accepted query re-encoded (url.Values.Encode)
// parses to the same values.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"",
		"type=sensor&prefix=dev-&limit=1000&cursor=dDIuMTcwMDAwMDAwMC40Mg",
		"limit=1&cursor=dDIuMTcwMDAwMDAwMC40Mg",
		"property=temp&since=59m30s&limit=5",
		"property=env.hum&since=2024-05-01T12:00:00Z",
		"since=2024-05-01T12:00:00.123456789%2B02:00",
		"since=2024-05-01T12:00:00+02:00", // an unencoded "+" arrives as a space
		"property=caf%C3%A9%20%E2%82%AC",
		"prefix=&type=",
		// corrupt or hostile
		"limit=0", "limit=1001", "limit=", "limit=%2B7", "limit=1&limit=2", "limit=99999999999999999999",
		"bogus=1", "%zz=1", "a;b=1", "type=bad%20name", "prefix=" + strings.Repeat("a", 129),
		"cursor=%20x", "cursor=" + strings.Repeat("A", 1025), "property=a%00b", "property=%FF",
		"since=yesterday", "since=-5m", "since=0s", "since=2026-13-01T00:00:00Z",
		"since=9999-12-31T23:59:59Z", "since=0001-01-01T00:00:00Z", "since=1600-01-01T00:00:00Z",
		"since=2562047h47m16s", "since=9223372036854775807ns",
		strings.Repeat("%FF", 100) + "=1",
	} {
		f.Add(s)
	}
	routes := [][]string{
		nil,
		{"type", "prefix", "limit", "cursor"},
		{"property", "since", "limit"},
		{"limit", "cursor"},
	}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

	f.Fuzz(func(t *testing.T, raw string) {
		checkErr := func(what string, err error) {
			t.Helper()
			msg := err.Error()
			if msg == "" || len(msg) > 512 || !utf8.ValidString(msg) || strings.ContainsFunc(msg, func(r rune) bool { return r < ' ' || r == 0x7f }) {
				t.Fatalf("%s: unfit error message (%d bytes): %q", what, len(msg), msg)
			}
		}
		for _, allowed := range routes {
			q, err := parseQuery(raw, allowed...)
			if err != nil {
				checkErr("parseQuery", err)
				continue
			}
			for k, vs := range q {
				if !slices.Contains(allowed, k) || len(vs) != 1 {
					t.Fatalf("accepted parameter %q with %d values (allowed %v)", k, len(vs), allowed)
				}
			}
			again, err := parseQuery(url.Values(q).Encode(), allowed...)
			if err != nil || !reflect.DeepEqual(again, q) {
				t.Fatalf("re-encoded query %q: %v, %v; want %v", url.Values(q).Encode(), again, err, q)
			}
			for _, k := range allowed {
				s, present := q.get(k), q[k] != nil
				switch k {
				case "limit":
					n, err := q.limit(77)
					switch {
					case err != nil:
						checkErr(k, err)
					case !present && n != 77:
						t.Fatalf("absent limit gave %d", n)
					case present && (n < 1 || n > maxLimit):
						t.Fatalf("limit %q accepted as %d", s, n)
					}
				case "type":
					v, err := q.name(k)
					if err != nil {
						checkErr(k, err)
					} else if v != s || v != "" && !validName(v) {
						t.Fatalf("type %q accepted as %q", s, v)
					}
				case "prefix":
					v, err := q.prefix()
					if err != nil {
						checkErr(k, err)
					} else if v != s || len(v) > 128 || !validNameChars(v) {
						t.Fatalf("prefix %q accepted as %q", s, v)
					}
				case "cursor":
					v, err := q.cursor()
					if err != nil {
						checkErr(k, err)
					} else if v != s || len(v) > maxCursorLen || strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r > '~' }) {
						t.Fatalf("cursor %q accepted as %q", s, v)
					}
				case "property":
					v, err := q.property()
					if err != nil {
						checkErr(k, err)
					} else if v != s || len(v) > maxPropertyLen || !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }) {
						t.Fatalf("property %q accepted as %q", s, v)
					}
				case "since":
					v, err := q.since(now)
					if err != nil {
						checkErr(k, err)
						continue
					}
					if s == "" && !v.IsZero() {
						t.Fatalf("absent since gave %v", v)
					}
					if v.IsZero() {
						continue // everything retained
					}
					if v.Location() != time.UTC {
						t.Fatalf("since %q gave %v, not UTC", s, v)
					}
					if back := time.Unix(0, v.UnixNano()); !back.Equal(v) {
						t.Fatalf("since %q gave %v, which Unix nanoseconds cannot hold (%v)", s, v, back)
					}
					if _, err := time.ParseDuration(s); err == nil && !v.Before(now) {
						t.Fatalf("since duration %q gave %v, not before now", s, v)
					}
				default:
					t.Fatalf("untested parameter %s", strconv.Quote(k))
				}
			}
		}
	})
}
