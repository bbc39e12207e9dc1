package awsdownlink

import (
	"bytes"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// entry is what the gateway knows of one thing's delta. An entry exists only for a thing a
// device asked about (Delta) since the cache was last reset: it is created with its
// GetThingShadow in flight, and the shadow's messages keep it current afterwards.
type entry struct {
	delta   map[string]any
	msg     []byte // render(delta, version); nil for no delta
	state   []byte // the delta alone, to tell whether a message changed it
	version int64  // the shadow version msg is at; 0 before anything is known
	known   bool   // a GetThingShadow or a documents message gave the whole delta
	checked int64  // Unix nanoseconds of the last GetThingShadow's answer (maxAge)
	// fetching is closed when the GetThingShadow in flight ends; nil when none is.
	fetching chan struct{}
	cost     int64
	// nextRefresh: the Unix nanoseconds before which no refresh is scheduled (refresh.go).
	nextRefresh atomic.Int64
}

// maxAge is how long an entry is trusted without asking AWS again: a message AWS IoT could not
// deliver (its per-connection rate exceeded, a session lost without the gateway noticing) would
// otherwise leave a thing's delta wrong until the entry is evicted. One GetThingShadow per
// talking thing per maxAge bounds that.
const maxAge = 24 * time.Hour

// entryOverhead is an entry's estimated memory besides its name and messages: the map slot,
// the struct, the decoded delta's maps.
const entryOverhead = 200

func (e *entry) size(name string) int64 {
	return entryOverhead + 2*int64(len(name)) + 3*int64(len(e.msg))
}

// cache holds the entries, bounded by bytes: beyond maxBytes the oldest entries (in the order
// they were created) go first, except those with a fetch in flight. A thing whose entry went
// is fetched again on its device's next request.
type cache struct {
	mu       sync.RWMutex
	m        map[string]*entry
	order    []string // names in creation order; may hold names already gone
	bytes    int64
	maxBytes int64
	pending  int // entries with a delta
	// limiter: GetThingShadow calls started per second.
	tokens   float64
	rate     float64
	burst    float64
	lastFill time.Time
	met      *metrics
}

func newCache(maxBytes int64, rate float64, met *metrics) *cache {
	burst := max(rate, 1)
	return &cache{m: map[string]*entry{}, maxBytes: maxBytes, rate: rate, burst: burst, tokens: burst, met: met}
}

// get returns the message of a known entry without waiting, whether there is one, and the
// entry's refresh time.
func (c *cache) get(name []byte, now int64) (msg []byte, ok bool, refresh *atomic.Int64) {
	c.mu.RLock()
	e := c.m[string(name)]
	if e != nil && e.known && e.fetching == nil && now-e.checked < int64(maxAge) {
		msg, ok, refresh = e.msg, true, &e.nextRefresh
	}
	c.mu.RUnlock()
	return msg, ok, refresh
}

// allowAt takes a token from the GetThingShadow rate limiter.
func (c *cache) allowAt(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.allow(now)
}

// msgOf returns the message of name's entry, whatever its state.
func (c *cache) msgOf(name []byte) []byte {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if e := c.m[string(name)]; e != nil {
		return e.msg
	}
	return nil
}

// startFetch makes sure name has an entry and, when it is not known and no fetch is in flight
// and the rate allows, marks a fetch in flight and returns start true. It returns the channel
// of the fetch in flight, nil when there is none.
func (c *cache) startFetch(name string, now time.Time) (wait chan struct{}, start bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[name]
	if e != nil && (e.fetching != nil || e.known && now.UnixNano()-e.checked < int64(maxAge)) {
		return e.fetching, false
	}
	if !c.allow(now) {
		c.met.fetches.WithLabelValues("rate_limited").Inc()
		return nil, false
	}
	if e == nil {
		e = &entry{}
		c.add(name, e)
	}
	e.fetching = make(chan struct{})
	return e.fetching, true
}

// allow takes a token from the GetThingShadow rate limiter.
func (c *cache) allow(now time.Time) bool {
	if c.rate <= 0 {
		return true
	}
	if !c.lastFill.IsZero() {
		c.tokens = min(c.burst, c.tokens+now.Sub(c.lastFill).Seconds()*c.rate)
	}
	c.lastFill = now
	if c.tokens < 1 {
		return false
	}
	c.tokens--
	return true
}

// fetched ends the fetch of name: with ok, the shadow at version had delta; without, the
// entry is dropped (the next request tries again) unless a message made it known meanwhile.
func (c *cache) fetched(name string, version int64, delta map[string]any, ok bool) (changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[name]
	if e == nil || e.fetching == nil {
		return false
	}
	close(e.fetching)
	e.fetching = nil
	if !ok {
		if !e.known {
			c.remove(name, e)
		}
		return false
	}
	e.checked = time.Now().UnixNano()
	if version < e.version {
		if e.known {
			return false // a documents message told all of a later version while the call was in flight
		}
		// A delta message of a later version came meanwhile: its properties are newer.
		delta, version = mergeDelta(delta, e.delta), e.version
	}
	e.known = true
	return c.set(name, e, version, delta)
}

// apply applies a message about name at version: a whole delta (whole: documents, a deleted
// shadow) or a delta message's properties to merge. Things without an entry are left alone:
// their device has not asked since the start, and GetThingShadow will tell all when it does.
func (c *cache) apply(name string, version int64, delta map[string]any, whole bool) (outcome string, changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[name]
	if e == nil {
		return "not_cached", false
	}
	if version < e.version || version == e.version && !whole {
		return "stale", false
	}
	if !whole {
		delta = mergeDelta(e.delta, delta)
	} else {
		e.known = true
	}
	return "applied", c.set(name, e, version, delta)
}

// set stores a new delta in e and reports whether its state changed.
func (c *cache) set(name string, e *entry, version int64, delta map[string]any) bool {
	msg, state := render(delta, version)
	changed := !bytes.Equal(state, e.state)
	if (e.msg == nil) != (msg == nil) {
		if msg == nil {
			c.pending--
		} else {
			c.pending++
		}
	}
	c.bytes -= e.cost
	e.delta, e.msg, e.state, e.version = delta, msg, state, version
	e.cost = e.size(name)
	c.bytes += e.cost
	c.evict()
	c.gauges()
	return changed
}

func (c *cache) add(name string, e *entry) {
	e.cost = e.size(name)
	c.m[name] = e
	c.order = append(c.order, name)
	c.bytes += e.cost
	c.evict()
	c.gauges()
}

func (c *cache) remove(name string, e *entry) {
	delete(c.m, name)
	c.bytes -= e.cost
	if e.msg != nil {
		c.pending--
	}
	c.gauges()
}

// evict drops the oldest entries while the cache is over its bound.
func (c *cache) evict() {
	skipped := 0
	for c.bytes > c.maxBytes && len(c.order) > skipped {
		name := c.order[skipped]
		e := c.m[name]
		if e != nil && e.fetching != nil {
			skipped++ // kept; its fetch ends soon
			continue
		}
		if skipped == 0 {
			c.order = c.order[1:] // O(1); append reuses or regrows the array
		} else {
			c.order = append(c.order[:skipped], c.order[skipped+1:]...)
		}
		if e != nil {
			c.remove(name, e)
			c.met.evictions.Inc()
		}
	}
	if len(c.order) > 2*len(c.m)+64 { // names of entries gone: compact
		kept := c.order[:0]
		for _, n := range c.order {
			if c.m[n] != nil {
				kept = append(kept, n)
			}
		}
		c.order = kept
	}
}

// reset forgets every entry (the MQTT session was lost: messages may have been missed). A
// fetch in flight stays; its answer is newer than anything missed.
func (c *cache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, e := range c.m {
		if e.fetching == nil {
			c.remove(name, e)
		}
	}
	c.order = c.order[:0]
	for name := range c.m {
		c.order = append(c.order, name)
	}
	c.met.resets.Inc()
}

func (c *cache) gauges() {
	c.met.entries.Set(float64(len(c.m)))
	c.met.bytes.Set(float64(c.bytes))
	c.met.pending.Set(float64(c.pending))
}

// metrics are the component's Prometheus metrics (see the package doc).
type metrics struct {
	entries, bytes, pending, connected prometheus.Gauge
	evictions, resets, connects, lost  prometheus.Counter
	fetches, messages                  *prometheus.CounterVec
	notifyDropped                      prometheus.Counter
	waits, refreshes                   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		entries:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "coapgw_downlink_aws_cache_entries", Help: "Things whose delta the gateway keeps (devices that asked since the start)."}),
		bytes:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "coapgw_downlink_aws_cache_bytes", Help: "Estimated memory of the delta cache."}),
		pending:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "coapgw_downlink_aws_pending_deltas", Help: "Cached things with a pending delta."}),
		connected:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "coapgw_downlink_aws_mqtt_connected", Help: "1 while the MQTT connection to AWS IoT is up."}),
		evictions:     prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgw_downlink_aws_cache_evictions_total", Help: "Entries dropped to stay within the cache's bytes."}),
		resets:        prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgw_downlink_aws_cache_resets_total", Help: "Times the cache was emptied because the MQTT session was not resumed."}),
		connects:      prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgw_downlink_aws_mqtt_connects_total", Help: "MQTT connections made to AWS IoT."}),
		lost:          prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgw_downlink_aws_mqtt_lost_total", Help: "MQTT connections lost or refused."}),
		fetches:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coapgw_downlink_aws_fetches_total", Help: "GetThingShadow calls on a device's first request, by outcome (ok, error, rate_limited: not made, queue_full: not made)."}, []string{"outcome"}),
		messages:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coapgw_downlink_aws_messages_total", Help: "Shadow messages received, by topic (delta, documents, delete) and outcome (applied, stale, not_cached, invalid)."}, []string{"topic", "outcome"}),
		notifyDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgw_downlink_aws_notify_dropped_total", Help: "Observe notifications not sent because the notification queue was full."}),
	}
	m.waits = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coapgw_downlink_aws_fetch_waits_total", Help: "Device requests that met a GetThingShadow in flight, by what they did: answered (it returned in time), late (the budget passed), skipped (waits took their share of the time: no wait)."}, []string{"outcome"})
	m.refreshes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coapgw_downlink_aws_refreshes_total", Help: "GetThingShadow calls to learn whether a pending delta was cleared (without the documents topic), by outcome (ok, error, rate_limited: not made)."}, []string{"outcome"})
	if reg != nil {
		reg.MustRegister(m.refreshes, m.entries, m.bytes, m.pending, m.connected, m.evictions, m.resets, m.connects, m.lost, m.fetches, m.messages, m.notifyDropped, m.waits)
	}
	return m
}
