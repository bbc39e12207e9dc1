package ops

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// BuildInfo returns the gauge coapgw_build_info{version,commit,goversion}, always 1, which names
// the build a process runs (Prometheus' own prometheus_build_info): join it to another series to
// see which version produced it, or count the versions of a fleet. commit "" is reported as
// "unknown".
func BuildInfo(version, commit string) prometheus.Collector {
	if commit == "" {
		commit = "unknown"
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "coapgw_build_info",
		Help: "Always 1; the labels name the build: version, VCS commit and Go version.",
		ConstLabels: prometheus.Labels{
			"version": version, "commit": commit, "goversion": runtime.Version(),
		},
	})
	g.Set(1)
	return g
}
