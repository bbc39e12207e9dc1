package httpapi

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/registry"
)

const (
	maxLimit       = 1000
	maxCursorLen   = 1024
	maxPropertyLen = 256
)

// validName reports whether s is a valid thing (or thing type) name, record.NamePattern.
func validName(s string) bool { return record.ValidName(s) }

// validNameChars reports whether s is a valid name prefix: empty, or the start of a valid name
// (^[a-zA-Z0-9:_-]{0,128}$; a prefix is never longer than a name).
func validNameChars(s string) bool { return s == "" || record.ValidName(s) }

// quote shows a user's value in an error message, shortened so that a huge value is not echoed.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}

// query is a request's parsed query string: every key known, none repeated.
type query url.Values

func parseQuery(raw string, allowed ...string) (query, error) {
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return nil, errors.New("malformed query string")
	}
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return nil, fmt.Errorf("unknown parameter %s: this route takes none", quote(k))
			}
			return nil, fmt.Errorf("unknown parameter %s (allowed: %s)", quote(k), strings.Join(allowed, ", "))
		}
		if n := len(vals[k]); n > 1 {
			return nil, fmt.Errorf("parameter %s given %d times", k, n)
		}
	}
	return query(vals), nil
}

func (q query) get(k string) string { return url.Values(q).Get(k) }

// limit returns the limit parameter, def when absent.
func (q query) limit(def int) (int, error) {
	s := q.get("limit")
	if s == "" {
		if _, present := q["limit"]; present {
			return 0, fmt.Errorf("limit must be an integer from 1 to %d, got an empty value", maxLimit)
		}
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxLimit {
		return 0, fmt.Errorf("limit must be an integer from 1 to %d, got %s", maxLimit, quote(s))
	}
	return n, nil
}

// sort returns the things list's sort and order parameters, "" when absent (the store's
// defaults: lastSeen, and its default order).
func (q query) sort() (string, string, error) {
	sort, order := q.get("sort"), q.get("order")
	if _, present := q["sort"]; present && !slices.Contains(registry.ThingSorts, sort) {
		return "", "", fmt.Errorf("sort must be one of %s, got %s", strings.Join(registry.ThingSorts, ", "), quote(sort))
	}
	if _, present := q["order"]; present && order != registry.OrderAsc && order != registry.OrderDesc {
		return "", "", fmt.Errorf("order must be %s or %s, got %s", registry.OrderAsc, registry.OrderDesc, quote(order))
	}
	return sort, order, nil
}

// latest returns how many latest values per thing the things list gives, 0 when absent.
func (q query) latest() (int, error) {
	s := q.get("latest")
	if _, present := q["latest"]; !present {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > registry.MaxLatest {
		return 0, fmt.Errorf("latest must be an integer from 0 to %d, got %s", registry.MaxLatest, quote(s))
	}
	return n, nil
}

// retrySelection returns the records a retry selects: reason, or gw and seq (one record; gw may
// be empty, for a record that could not be decoded).
func (q query) retrySelection() (registry.RetrySelection, error) {
	_, hasGW := q["gw"]
	_, hasSeq := q["seq"]
	reason := q.get("reason")
	switch {
	case reason != "" && (hasGW || hasSeq):
		return registry.RetrySelection{}, errors.New("give reason, or gw and seq, not both")
	case reason != "":
		return registry.RetrySelection{Reason: reason}, nil
	case !hasSeq:
		return registry.RetrySelection{}, errors.New("reason is required (the exact reason of the records to retry), or gw and seq of one record")
	}
	seq, err := strconv.ParseUint(q.get("seq"), 10, 64)
	if err != nil {
		return registry.RetrySelection{}, fmt.Errorf("seq must be a record's sequence number, got %s", quote(q.get("seq")))
	}
	return registry.RetrySelection{GW: q.get("gw"), Seq: seq}, nil
}

// name returns an optional name-like parameter (thing type), "" when absent.
func (q query) name(k string) (string, error) {
	s := q.get(k)
	if s == "" {
		return "", nil
	}
	if !validName(s) {
		return "", fmt.Errorf("%s must match ^[a-zA-Z0-9:_-]{1,128}$, got %s", k, quote(s))
	}
	return s, nil
}

// prefix returns the thing name prefix filter, "" when absent.
func (q query) prefix() (string, error) {
	s := q.get("prefix")
	if len(s) > 128 || !validNameChars(s) {
		return "", fmt.Errorf("prefix must match ^[a-zA-Z0-9:_-]{0,128}$, got %s", quote(s))
	}
	return s, nil
}

// cursor returns the opaque paging token, "" when absent.
func (q query) cursor() (string, error) {
	s := q.get("cursor")
	if len(s) > maxCursorLen {
		return "", fmt.Errorf("cursor is longer than %d bytes", maxCursorLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return "", fmt.Errorf("cursor %s is not a token this API returned", quote(s))
		}
	}
	return s, nil
}

// property returns the history property filter ("temp", "env.hum"), "" when absent.
func (q query) property() (string, error) {
	s := q.get("property")
	if len(s) > maxPropertyLen || !utf8.ValidString(s) {
		return "", fmt.Errorf("property must be valid UTF-8 of at most %d bytes", maxPropertyLen)
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			return "", fmt.Errorf("property %s contains a control character", quote(s))
		}
	}
	return s, nil
}

// since returns the history start: an RFC 3339 time, or a positive Go duration meaning now−d.
// The zero time when absent.
func (q query) since(now time.Time) (time.Time, error) {
	t, err := q.sinceTime(now)
	return clampSince(t), err
}

// The store compares times in Unix nanoseconds, which hold 1678-09-21 to 2262-04-11 only.
var (
	minSince = time.Unix(0, math.MinInt64).UTC()
	maxSince = time.Unix(0, math.MaxInt64).UTC()
)

// clampSince brings a since outside what Unix nanoseconds hold within them without changing
// the answer: an earlier one is the zero time (everything retained), a later one the latest
// time they hold (nothing).
func clampSince(t time.Time) time.Time {
	switch {
	case t.Before(minSince):
		return time.Time{}
	case t.After(maxSince):
		return maxSince
	}
	return t
}

func (q query) sinceTime(now time.Time) (time.Time, error) {
	s := q.get("since")
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	// A "+" of an offset that was not percent-encoded arrives as a space.
	if strings.Contains(s, " ") {
		if t, err := time.Parse(time.RFC3339Nano, strings.ReplaceAll(s, " ", "+")); err == nil {
			return t.UTC(), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("since must be an RFC 3339 time such as 2024-05-01T12:00:00Z or a duration such as 15m, got %s", quote(s))
	}
	if d <= 0 {
		return time.Time{}, fmt.Errorf("since duration must be positive, got %s", quote(s))
	}
	return now.Add(-d).UTC(), nil
}
