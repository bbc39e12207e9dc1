package ingest

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// limiter is --device-rate: a token bucket per device (type/id), refilled at perSec up to burst.
// Buckets live in sharded maps keyed by a seeded 64-bit hash of the device's name (key), or of
// its authenticated identity (identityKey, a separate key space). Memory is
// bounded: a full bucket says nothing an absent one would not, so when a shard reaches its share
// of maxEntries it drops the buckets that have refilled; if every one is still in use, a new
// device is let through untracked (and counted) rather than refused for others' traffic. At the
// default cap (Config.DeviceLimitEntries, --device-rate-devices, 1,000,000) the table takes about
// 53 MiB of heap (BenchmarkLimiterMemory); collectors exports its size and the untracked count.
type limiter struct {
	perSec, burst float64
	perShard      int
	seed          maphash.Seed
	shards        [64]limShard
	untracked     atomic.Uint64
}

type limShard struct {
	mu        sync.Mutex
	m         map[uint64]bucket
	lastSweep int64 // a full shard is swept at most once a second
}

type bucket struct {
	tokens float64
	last   int64 // Unix ns of the last update
}

// newLimiter limits each device to perMinute records a minute with bursts of burst; perMinute 0
// means no limit (nil limiter).
func newLimiter(perMinute, burst, maxEntries int) *limiter {
	if perMinute <= 0 {
		return nil
	}
	l := &limiter{perSec: float64(perMinute) / 60, burst: float64(max(1, burst)), seed: maphash.MakeSeed()}
	l.perShard = max(1, maxEntries/len(l.shards))
	for i := range l.shards {
		l.shards[i].m = map[uint64]bucket{}
	}
	return l
}

func (l *limiter) key(typ, id []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(l.seed)
	h.Write(typ)
	h.WriteByte('/')
	h.Write(id)
	return h.Sum64()
}

// identityKey is the key of a DTLS identity: a leading 0 byte, which no name contains, keeps it
// apart from the key of the same /{type}/{id} over plain CoAP.
func (l *limiter) identityKey(identity string) uint64 {
	var h maphash.Hash
	h.SetSeed(l.seed)
	h.WriteByte(0)
	h.WriteString(identity)
	return h.Sum64()
}

// allow takes a token from the device's bucket at now (Unix ns). Without one it returns false
// and how long until the next token.
func (l *limiter) allow(typ, id []byte, now int64) (bool, time.Duration) {
	return l.allowKey(l.key(typ, id), now)
}

// allowKey is allow for the bucket of key k (key, identityKey).
func (l *limiter) allowKey(k uint64, now int64) (bool, time.Duration) {
	s := &l.shards[k%uint64(len(l.shards))]
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[k]
	if !ok {
		if len(s.m) >= l.perShard && !l.sweep(s, now) {
			l.untracked.Add(1)
			return true, 0
		}
		b = bucket{tokens: l.burst, last: now}
	}
	if now > b.last {
		b.tokens = min(l.burst, b.tokens+float64(now-b.last)/1e9*l.perSec)
		b.last = now
	}
	if b.tokens < 1 {
		s.m[k] = b
		return false, time.Duration((1 - b.tokens) / l.perSec * 1e9)
	}
	b.tokens--
	s.m[k] = b
	return true, 0
}

// sweep drops the shard's buckets that have refilled by now and reports whether there is room.
// A shard is swept at most once a second, so that a full table of busy devices does not make
// every new one pay for a scan.
func (l *limiter) sweep(s *limShard, now int64) bool {
	if now-s.lastSweep < int64(time.Second) {
		return false
	}
	s.lastSweep = now
	for k, b := range s.m {
		if b.tokens+float64(now-b.last)/1e9*l.perSec >= l.burst {
			delete(s.m, k)
		}
	}
	return len(s.m) < l.perShard
}

// entries is how many devices are tracked.
func (l *limiter) entries() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// collectors are the limiter's metrics: coapgw_ingest_rate_limit_devices (devices tracked) and
// coapgw_ingest_rate_limit_untracked_total (records let through untracked at the cap).
func (l *limiter) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "coapgw_ingest_rate_limit_devices",
			Help: "Devices with a --device-rate bucket in memory (bounded; refilled buckets are dropped when the table is full)."},
			func() float64 { return float64(l.entries()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "coapgw_ingest_rate_limit_untracked_total",
			Help: "Records let through without a --device-rate bucket because the table was full of devices still limited."},
			func() float64 { return float64(l.untracked.Load()) }),
	}
}
