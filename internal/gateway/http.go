package gateway

import "github.com/coapgw/coapgw/internal/ops"

// opsConfig is the operations server's configuration: its address, its limits (timeouts and the
// connection cap, which ops lowers to keep descriptors for the spool) and the readiness check
// (starting or stopping, a component that died, spool appends failing: see readiness).
func (g *Gateway) opsConfig() ops.Config {
	c := ops.HTTPConfig(g.cfg.HTTP)
	c.Ready, c.Details = g.readiness, g.readyDetails
	return c
}
