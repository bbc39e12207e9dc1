package main

import "testing"

func TestGCDefaults(t *testing.T) {
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	for _, tc := range []struct {
		name        string
		vars        map[string]string
		maxSessions int
		percent     int
		limit       int64
		ok          bool
	}{
		{"unset, default cap", nil, 100_000, 200, 512 << 20, true},
		{"unset, small cap", nil, 1_000, 200, 512 << 20, true},
		{"unset, 1M sessions", nil, 1_000_000, 200, 1_000_000 * (512 << 20 / 100_000), true},
		{"GOGC set", map[string]string{"GOGC": "100"}, 100_000, 0, 0, false},
		{"GOGC=off", map[string]string{"GOGC": "off"}, 100_000, 0, 0, false},
		{"GOMEMLIMIT set", map[string]string{"GOMEMLIMIT": "1GiB"}, 100_000, 0, 0, false},
	} {
		percent, limit, ok := gcDefaults(env(tc.vars), tc.maxSessions)
		if percent != tc.percent || limit != tc.limit || ok != tc.ok {
			t.Errorf("%s: gcDefaults = %d, %d, %v; want %d, %d, %v", tc.name, percent, limit, ok, tc.percent, tc.limit, tc.ok)
		}
	}
}
