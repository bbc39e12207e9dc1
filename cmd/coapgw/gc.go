package main

import "runtime/debug"

// The garbage collector's defaults for `coapgw serve`, used when the operator sets neither
// GOGC nor GOMEMLIMIT (either one leaves both to the runtime and the operator).
//
// GOGC=200 lets the heap grow to three times what is live between collections instead of
// twice: pion allocates tens of KB per DTLS handshake, so collections are a large share of a
// handshake's CPU (docs/benchmarks.md, "Fewer allocations in pion, and a GC default"). The
// soft memory limit keeps the larger target from raising the peak where it matters: past it
// the runtime collects earlier, as if GOGC were lower. It is 512 MiB per 100,000 established
// DTLS sessions allowed (dtls-max-sessions, at least 512 MiB): at the default cap a gateway
// whose every session is awake holds ~250 MB live and collects at 512 MiB, about where
// GOGC=100 would, rather than at three times what is live.
const (
	defaultGCPercent      = 200
	memoryLimitPerSession = 512 << 20 / 100_000
	minMemoryLimit        = 512 << 20
)

// gcDefaults returns the GOGC percentage and soft memory limit serve sets for a gateway
// allowing maxSessions DTLS sessions, and false if the environment sets either variable.
func gcDefaults(getenv func(string) string, maxSessions int) (percent int, limit int64, ok bool) {
	if getenv("GOGC") != "" || getenv("GOMEMLIMIT") != "" {
		return 0, 0, false
	}
	return defaultGCPercent, max(minMemoryLimit, int64(maxSessions)*memoryLimitPerSession), true
}

// setGCDefaults applies gcDefaults.
func setGCDefaults(getenv func(string) string, maxSessions int) {
	if percent, limit, ok := gcDefaults(getenv, maxSessions); ok {
		debug.SetGCPercent(percent)
		debug.SetMemoryLimit(limit)
	}
}
