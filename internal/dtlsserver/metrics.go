package dtlsserver

import "github.com/prometheus/client_golang/prometheus"

type disposition int

const (
	dispSession         disposition = iota // routed to its session (by Connection ID or address)
	dispHello                              // a ClientHello that started a handshake
	dispUnknownCID                         // a tls12_cid record whose Connection ID no session has
	dispUnknownPeer                        // not a ClientHello, from an address without a session
	dispShort                              // shorter than a record header
	dispQueueFull                          // the session's queue was full
	dispHandshakesFull                     // a ClientHello past MaxHandshakes
	dispOversized                          // longer than MaxDatagram: dropped
	dispRevoked                            // its session's identity was refused at a recheck
	dispReplayed                           // a record the replay window refused (fastpath.go)
	dispUnauthenticated                    // a record that did not authenticate: dropped
	dispBadRecord                          // a record the session does not take: malformed, wrong epoch or CID, handshake
	dispClosed                             // a close_notify or fatal alert: the session ended
	dispHelloVerify                        // a ClientHello without a cookie: answered with a HelloVerifyRequest
	dispBadCookie                          // a ClientHello with an invalid cookie: answered with a HelloVerifyRequest
	dispBadHello                           // an epoch-0 ClientHello that cannot be read whole (fragmented, malformed)
	numDisp
)

var dispNames = [numDisp]string{"session", "hello", "unknown_cid", "unknown_peer", "short", "queue_full", "handshakes_full", "oversized", "revoked", "replayed", "unauthenticated", "bad_record", "closed", "hello_verify", "bad_cookie", "bad_hello"}

const (
	resultOK        = "ok"
	resultFailed    = "failed"    // a fatal alert: wrong key, unknown identity, no common suite, ...
	resultTimeout   = "timeout"   // not finished within HandshakeTimeout (spoofed or lost peers)
	resultAborted   = "aborted"   // the session was closed during the handshake (shutdown)
	resultDisplaced = "displaced" // no longer happens: no handshake starts before the cookie
	evictIdle       = "idle"
	evictCap        = "cap"
	evictRevoked    = "revoked" // the PSK hook refused the identity or changed its key (recheck.go)
)

type metrics struct {
	disps        [numDisp]prometheus.Counter
	handshake    func(result string)
	evict        func(reason string)
	saved        prometheus.Counter
	restored     prometheus.Counter
	hibernations prometheus.Counter
	wakes        prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Server) *metrics {
	m := &metrics{}
	d := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coapgw_dtls_datagrams_total", Help: "DTLS datagrams received, by disposition."}, []string{"disposition"})
	for i, n := range dispNames {
		m.disps[i] = d.WithLabelValues(n)
	}
	hs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coapgw_dtls_handshakes_total", Help: "DTLS handshakes ended, by result."}, []string{"result"})
	for _, r := range []string{resultOK, resultFailed, resultTimeout, resultAborted, resultDisplaced} {
		hs.WithLabelValues(r)
	}
	m.handshake = func(r string) { hs.WithLabelValues(r).Inc() }
	ev := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coapgw_dtls_session_evictions_total", Help: "DTLS sessions closed by the server, by reason (idle, cap, revoked)."}, []string{"reason"})
	for _, r := range []string{evictIdle, evictCap, evictRevoked} {
		ev.WithLabelValues(r)
	}
	m.evict = func(r string) { ev.WithLabelValues(r).Inc() }
	m.saved = prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgw_dtls_sessions_saved_total", Help: "DTLS sessions saved to the state file at shutdown."})
	m.restored = prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgw_dtls_sessions_restored_total", Help: "DTLS sessions resumed from the state file at start."})
	m.hibernations = prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgw_dtls_hibernations_total", Help: "DTLS sessions hibernated (derived keys dropped) after HibernateAfter without traffic."})
	m.wakes = prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgw_dtls_wakes_total", Help: "Hibernated DTLS sessions woken (keys derived again) by a datagram or a response."})
	if reg != nil {
		est := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "coapgw_dtls_sessions", Help: "DTLS sessions, by state (established, handshake).", ConstLabels: prometheus.Labels{"state": "established"}},
			func() float64 { e, _ := s.Sessions(); return float64(e) })
		hsg := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "coapgw_dtls_sessions", Help: "DTLS sessions, by state (established, handshake).", ConstLabels: prometheus.Labels{"state": "handshake"}},
			func() float64 { _, h := s.Sessions(); return float64(h) })
		hib := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "coapgw_dtls_hibernated_sessions", Help: "Established DTLS sessions hibernated (counted in coapgw_dtls_sessions too)."},
			func() float64 { return float64(s.hibernated.Load()) })
		reg.MustRegister(d, hs, ev, m.saved, m.restored, m.hibernations, m.wakes, est, hsg, hib)
	}
	return m
}

func (m *metrics) disp(d disposition) { m.disps[d].Inc() }
