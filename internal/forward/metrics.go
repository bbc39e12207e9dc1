package forward

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	kindThrottled = iota
	kindUnavailable
	kindRejected
	numKinds
)

type metrics struct {
	sent, retried, failed prometheus.Counter
	batches               prometheus.Counter
	batchSeconds          prometheus.Histogram
	callErrors            [numKinds]prometheus.Counter
	backoff               prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, lag, pending func() float64) (*metrics, error) {
	records := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "coapgw_forward_records_total",
		Help: "Records by outcome: sent (accepted by the queue), retried (sent again after a failure), failed (dropped).",
	}, []string{"result"})
	callErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "coapgw_forward_call_errors_total",
		Help: "Queue calls that failed as a whole, by kind: throttled, unavailable, rejected.",
	}, []string{"kind"})
	m := &metrics{
		sent:    records.WithLabelValues("sent"),
		retried: records.WithLabelValues("retried"),
		failed:  records.WithLabelValues("failed"),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgw_forward_batches_total",
			Help: "Publish calls (queue batch requests) made.",
		}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "coapgw_forward_batch_seconds",
			Help:    "Duration of Publish calls.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		backoff: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgw_forward_backoff_seconds_total",
			Help: "Time spent waiting before retrying queue calls.",
		}),
	}
	m.callErrors[kindThrottled] = callErrors.WithLabelValues("throttled")
	m.callErrors[kindUnavailable] = callErrors.WithLabelValues("unavailable")
	m.callErrors[kindRejected] = callErrors.WithLabelValues("rejected")
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{
		records, callErrors, m.batches, m.batchSeconds, m.backoff,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coapgw_forward_lag_seconds",
			Help: "Age (now - received_at) of the oldest record read from the spool and not yet accepted by the queue.",
		}, lag),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coapgw_forward_pending_records",
			Help: "Records read from the spool and not yet acknowledged.",
		}, pending),
	} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errors.Join(errs...)
}
