package awsiot

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	calls                *prometheus.CounterVec
	cacheHit, cacheMiss  prometheus.Counter
	conflicts, unchanged prometheus.Counter
	setAside             *prometheus.CounterVec
	deferred             *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "coapgw_awsiot_thing_cache_total",
		Help: "Thing cache lookups, by result: hit or miss (a miss reads the shadow).",
	}, []string{"result"})
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgw_awsiot_calls_total",
			Help: "AWS IoT API calls made by the sink, by operation and result (ok or error); SDK retries are not counted.",
		}, []string{"operation", "result"}),
		cacheHit:  cache.WithLabelValues("hit"),
		cacheMiss: cache.WithLabelValues("miss"),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgw_awsiot_shadow_conflicts_total",
			Help: "Shadow updates refused for a version conflict (another writer); the shadow is re-read and merged again.",
		}),
		unchanged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgw_awsiot_shadow_unchanged_total",
			Help: "Per-thing updates skipped without a call because the shadow already reflects them (redelivered or older records).",
		}),
		setAside: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgw_awsiot_set_aside_total",
			Help: "Records the sink set aside, by reason: type_conflict, shadow_limit, reserved_key, rejected (by AWS), publish_rejected (AWS refused the publish).",
		}, []string{"reason"}),
	}
	for _, r := range []string{"type_conflict", "shadow_limit", "reserved_key", "rejected", "publish_rejected"} {
		m.setAside.WithLabelValues(r)
	}
	m.deferred = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "coapgw_awsiot_deferred_total",
		Help: "Records handed back to be tried later, by reason: budget (this consumer's share of the control-plane rate is spent), throttled (by AWS, after the SDK's retries) or deadline (the batch ran out of time before its thing was written).",
	}, []string{"reason"})
	for _, r := range []string{"budget", "throttled", "deadline"} {
		m.deferred.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.calls, cache, m.conflicts, m.unchanged, m.setAside, m.deferred} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) call(op string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.calls.WithLabelValues(op, result).Inc()
}
