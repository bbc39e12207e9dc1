package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// WriteJSON writes r as one indented JSON object.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes r for a human.
func (r *Result) WriteText(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	mode := r.Mode
	if r.Request != "" {
		mode += " " + r.Request
	}
	if r.DTLS != nil {
		mode += " over DTLS " + r.DTLS.CipherSuite
	}
	p("coapgw-bench: %s, %d devices × %d in flight → %s, %d-byte payload, %d worker(s), GOMAXPROCS=%d",
		mode, r.Devices, r.Inflight, r.Target, r.PayloadSize, r.Workers, r.GOMAXPROCS)
	if r.DTLS != nil {
		r.writeDTLS(p)
	}
	note := ""
	if r.Interrupted {
		note = " (interrupted)"
	}
	p("  window         %.2f s after %.2f s warmup%s", r.ElapsedS, r.WarmupS, note)
	p("  delivered/s    %.0f  (2.04 per second)", r.DeliveredPerSec)
	p("  sent           %d  (%.0f/s)", r.Sent, r.SentPerSec)
	p("  delivered      %d", r.Delivered)
	p("  responses      %d  (%.0f/s)  codes: %s", r.Responses, r.ResponsesPerSec, formatCodes(r.Codes))
	if r.Mode == "CON" {
		p("  lost           %d  (no answer after %s)", r.Lost, "MAX_RETRANSMIT retransmissions")
		p("  retransmitted  %d", r.Retransmissions)
		p("  separate       %d empty ACKs, %d separate responses, %d ACKs sent, %d never came",
			r.EmptyACKs, r.SeparateResponses, r.ACKsSent, r.SeparateLost)
	} else {
		p("  lost           %d  (no response within the NON timeout)", r.Lost)
	}
	p("  anomalies      %d unmatched/duplicate, %d token mismatch, %d malformed, %d unexpected",
		r.Unmatched, r.TokenMismatch, r.Malformed, r.Unexpected)
	p("  socket errors  %d send, %d receive", r.SendErrors, r.RecvErrors)
	p("  outstanding    %d at the end of the window", r.Outstanding)
	p("  latency 2.04   %s", formatLatency(r.Latency))
	if r.LatencyAll.Count != r.Latency.Count {
		p("  latency all    %s", formatLatency(r.LatencyAll))
	}
	p("  load generator %.2f s CPU (%.1f%% of a core), %.2f µs CPU per request, %d drops on its sockets",
		r.Loadgen.CPUS, 100*r.Loadgen.CoreUtil, r.Loadgen.CPUUSPerRequest, r.Loadgen.SocketDrops)
	p("  kernel         Udp RcvbufErrors +%d, Udp6 RcvbufErrors +%d (system-wide)",
		r.Kernel.UDPRcvbufErrors, r.Kernel.UDP6RcvbufErrors)
	if g := r.Gateway; g != nil {
		p("  gateway pid %d %.2f s CPU (%.1f%% of a core), %.2f µs CPU per delivered message",
			g.PID, g.CPUS, 100*g.CoreUtil, g.CPUUSPerDelivered)
		p("                 peak RSS (VmHWM) %.1f MiB, RSS %.1f MiB, %d threads",
			float64(g.VmHWMKiB)/1024, float64(g.VmRSSKiB)/1024, g.Threads)
		if g.Port > 0 {
			p("                 %d drops on the sockets bound to port %d", g.PortSocketDrops, g.Port)
		}
	}
	for _, s := range r.Warnings {
		p("  warning: %s", s)
	}
}

// writeDTLS writes the handshake phase.
func (r *Result) writeDTLS(p func(string, ...any)) {
	d := r.DTLS
	p("  handshakes/s   %.0f  (%d established, %d failed in %.3f s, %s keys, %d at once)",
		d.HandshakesPerSec, d.Handshakes, d.Failures, d.ElapsedS, d.Keys, d.Concurrency)
	p("  handshake lat  %s", formatLatency(d.Latency))
	keys := make([]string, 0, len(d.Errors))
	for k := range d.Errors {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		p("  handshake err  %d × %s", d.Errors[k], k)
	}
	p("  handshake load %.2f s CPU, %.1f µs CPU per handshake, RSS %.1f MiB with the sessions",
		d.LoadgenCPUS, d.LoadgenCPUUSPerHS, float64(d.LoadgenRSSKiB)/1024)
	if g := d.Gateway; g != nil {
		p("  gateway hs     %.2f s CPU (%.1f%% of a core), %.1f µs CPU per handshake",
			g.CPUS, 100*g.CoreUtil, g.CPUUSPerHandshake)
		p("                 RSS %.1f → %.1f MiB, %.0f bytes per session",
			float64(g.RSSBeforeKiB)/1024, float64(g.RSSAfterKiB)/1024, g.BytesPerSession)
	}
}

func formatCodes(codes map[string]uint64) string {
	if len(codes) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(codes))
	for k := range codes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%d", k, codes[k])
	}
	return b.String()
}

func formatLatency(l LatencySummary) string {
	if l.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (min %s, mean %s, n=%d)",
		formatUS(l.P50US), formatUS(l.P90US), formatUS(l.P99US), formatUS(l.P999US),
		formatUS(l.MaxUS), formatUS(l.MinUS), formatUS(l.MeanUS), l.Count)
}

func formatUS(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2fs", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.2fms", us/1e3)
	}
	return fmt.Sprintf("%.0fµs", us)
}
