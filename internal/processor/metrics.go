package processor

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// counter is a Prometheus counter whose value Stats can read.
type counter struct {
	c prometheus.Counter
	n *atomic.Int64
}

func (c counter) Add(v float64) {
	c.c.Add(v)
	c.n.Add(int64(v))
}

func (c counter) Inc() { c.Add(1) }

type metrics struct {
	applied, duplicate, setAside, deferred, batches, retries counter
	batchSeconds                                             prometheus.Histogram

	nApplied, nDuplicate, nSetAside, nDeferred, nBatches, nRetries atomic.Int64
}

func newMetrics(reg prometheus.Registerer, lag func() float64) (*metrics, error) {
	m := &metrics{}
	records := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "coapgw_processor_records_total",
		Help: "Records processed, by result: applied, duplicate (already applied), set_aside (failed permanently) or deferred (handed back to be tried later: throttled).",
	}, []string{"result"})
	batches := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "coapgw_processor_batches_total",
		Help: "Batches applied to the sink.",
	})
	retries := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "coapgw_processor_retries_total",
		Help: "Sink calls that failed transiently and were retried.",
	})
	m.batchSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "coapgw_processor_batch_seconds",
		Help:    "Time to decode and apply one batch, retries included.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
	lagGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "coapgw_processor_lag_seconds",
		Help: "Now minus received_at of the oldest record not yet applied (between batches: of the newest applied); 0 when idle and caught up.",
	}, lag)
	m.applied = counter{records.WithLabelValues("applied"), &m.nApplied}
	m.duplicate = counter{records.WithLabelValues("duplicate"), &m.nDuplicate}
	m.setAside = counter{records.WithLabelValues("set_aside"), &m.nSetAside}
	m.deferred = counter{records.WithLabelValues("deferred"), &m.nDeferred}
	m.batches = counter{batches, &m.nBatches}
	m.retries = counter{retries, &m.nRetries}
	if reg != nil {
		for _, c := range []prometheus.Collector{records, batches, retries, m.batchSeconds, lagGauge} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
