package gateway

import (
	"os"

	"github.com/coapgw/coapgw/internal/ops"
)

// openEMF builds the gateway's CloudWatch embedded metric format writer (--emf-interval; nil when
// off): the stage's lag (forwarder or local processor), the spool's depth and bytes, and the
// whole-call failures in a row of the forwarder, per gateway (GatewayId) and over all gateways.
// The Terraform deployment alarms on them (deploy/terraform/modules/coapgw/alarms.tf).
func (g *Gateway) openEMF() (*ops.EMF, error) {
	c := g.cfg.EMF
	if c.Interval <= 0 {
		return nil, nil
	}
	metrics := []ops.EMFMetric{
		{Name: "StageLagSeconds", Unit: "Seconds", Value: func() float64 { return g.lag().Seconds() }},
		{Name: "SpoolDepth", Unit: "Count", Value: func() float64 { return float64(g.spool.Stats().Depth) }},
		{Name: "SpoolBytes", Unit: "Bytes", Value: func() float64 { return float64(g.spool.Stats().Bytes) }},
	}
	if g.forward != nil {
		metrics = append(metrics, ops.EMFMetric{Name: "QueueCallsFailing", Unit: "Count",
			Value: func() float64 { return float64(g.forward.fwd.Stats().Failures) }})
	}
	return ops.NewEMF(ops.EMFConfig{
		Interval: c.Interval, Addr: c.Addr, Namespace: c.Namespace, LogGroup: c.LogGroup,
		Dimensions: map[string]string{"GatewayId": g.cfg.Ingest.GatewayID}, Metrics: metrics,
	}, os.Stderr, g.log.With("component", "emf"))
}
