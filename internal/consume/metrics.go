package consume

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	received      prometheus.Counter
	messages      *prometheus.CounterVec
	sqsErrors     *prometheus.CounterVec
	batchMessages prometheus.Histogram
	inflight      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgw_consume_received_total",
			Help: "SQS messages received.",
		}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgw_consume_messages_total",
			Help: "SQS messages acknowledged, by result: deleted, set_aside (left for the DLQ), deferred (throttled: returned to come back when AWS has room), retry (returned with backoff after a transient failure), released (returned at once on stop).",
		}, []string{"result"}),
		sqsErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgw_consume_sqs_errors_total",
			Help: "Failed SQS calls (ReceiveMessage) or entries (DeleteMessageBatch, ChangeMessageVisibilityBatch), by operation.",
		}, []string{"operation"}),
		batchMessages: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "coapgw_consume_batch_messages",
			Help:    "Messages per batch handed to the processor.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coapgw_consume_inflight_messages",
			Help: "Messages received and not yet acknowledged.",
		}),
	}
	for _, r := range []string{"deleted", "set_aside", "deferred", "retry", "released"} {
		m.messages.WithLabelValues(r)
	}
	for _, op := range []string{"ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch"} {
		m.sqsErrors.WithLabelValues(op)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.received, m.messages, m.sqsErrors, m.batchMessages, m.inflight} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
