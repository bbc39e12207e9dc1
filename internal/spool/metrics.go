package spool

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the spool's Prometheus collectors (listed in the package doc).
type metrics struct {
	appendedRecords prometheus.Counter
	appendedBytes   prometheus.Counter
	fsync           prometheus.Histogram
	batch           prometheus.Histogram
	depth           prometheus.Gauge
	size            prometheus.Gauge
	corrupt         prometheus.Counter
	writeErrors     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "coapgw", "spool"
	m := &metrics{
		appendedRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "appended_records_total",
			Help: "Entries made durable in the spool.",
		}),
		appendedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "appended_bytes_total",
			Help: "Data bytes of the entries made durable in the spool.",
		}),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "fsync_duration_seconds",
			Help:    "Duration of the fsync of one group commit.",
			Buckets: prometheus.ExponentialBucketsRange(100e-6, 5, 16),
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "commit_batch_records",
			Help:    "Entries per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 15),
		}),
		depth: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "depth_records",
			Help: "Durable entries not yet delivered downstream.",
		}),
		size: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "size_bytes",
			Help: "Bytes held by the spool.",
		}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "corrupt_records_total",
			Help: "Corrupt regions skipped or truncated.",
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "write_errors_total",
			Help: "Failed batch writes, fsyncs and segment creations.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.appendedRecords, err = register(reg, m.appendedRecords, err)
	m.appendedBytes, err = register(reg, m.appendedBytes, err)
	m.fsync, err = register(reg, m.fsync, err)
	m.batch, err = register(reg, m.batch, err)
	m.depth, err = register(reg, m.depth, err)
	m.size, err = register(reg, m.size, err)
	m.corrupt, err = register(reg, m.corrupt, err)
	m.writeErrors, err = register(reg, m.writeErrors, err)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return m, nil
}

// register registers c, or returns the collector already registered under the same description (a
// spool reopened on the same registry keeps counting into the same series).
func register[C prometheus.Collector](reg prometheus.Registerer, c C, prev error) (C, error) {
	if prev != nil {
		return c, prev
	}
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}
