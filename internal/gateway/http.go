package gateway

import "github.com/coapgw/coapgw/internal/ops"

// opsConfig is the operations server's configuration: its address, its limits (timeouts and the
// connection cap, which ops lowers to keep descriptors for the spool) and the readiness check
// (starting or stopping, a component that died, spool appends failing: see readiness).
func (g *Gateway) opsConfig() ops.Config {
	h := g.cfg.HTTP
	return ops.Config{
		Addr: h.Addr, Pprof: h.Pprof, Ready: g.readiness, Details: g.readyDetails,
		ReadTimeout: h.ReadTimeout, WriteTimeout: h.WriteTimeout, IdleTimeout: h.IdleTimeout,
		MaxConns: h.MaxConns,
	}
}
