package coapserver

import (
	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/prometheus/client_golang/prometheus"
)

type disposition int

const (
	dispRequest        disposition = iota // a new request handed to the handler
	dispDuplicate                         // a duplicate (peer, MID): cached response replayed or ignored
	dispPing                              // empty CON answered with RST
	dispAckRst                            // ACK or RST from a peer (never answered)
	dispFormat                            // message format error (CON → RST, NON dropped)
	dispUnsolicited                       // response or reserved code class (CON → RST, NON dropped)
	dispShort                             // under 4 bytes: dropped
	dispVersion                           // version other than 1: dropped
	dispOversized                         // longer than the read buffer: CON request → 4.13, else dropped
	dispTooManyOptions                    // over coapmsg.MaxOptions options: CON request → 4.00, else dropped or RST
	numDisp
)

var dispNames = [numDisp]string{"request", "duplicate", "ping", "ack_rst", "format_error", "unsolicited", "short", "bad_version", "oversized", "too_many_options"}

// blockOutcome is what became of a block of a request body (block1.go), or of a body.
type blockOutcome int

const (
	outContinued  blockOutcome = iota // a block taken, 2.31 sent
	outCompleted                      // the last block taken: the body went to the handler
	outIncomplete                     // 4.08: no body to continue, or a gap
	outTooLarge                       // 4.13: Size1 or the body over MaxRequestBody
	outBadBlock                       // 4.00 or 4.02: a malformed block, or Block1 without a body
	outFull                           // 5.03: no reassembly memory left
	outEvicted                        // a body dropped for another (per-peer cap, memory)
	outExpired                        // a body dropped after BlockTimeout without a block
	numBlockOut
)

var blockOutNames = [numBlockOut]string{"continued", "completed", "incomplete", "too_large", "bad_block", "memory_full", "evicted", "expired"}

// Metrics are the exchange layer's Prometheus metrics:
//
//	coapgw_coap_datagrams_total{disposition}      datagrams received, by what became of them
//	coapgw_coap_responses_total{code}              responses sent, by code ("rst" for RST)
//	coapgw_coap_empty_acks_total                   empty ACKs sent because the answer was late
//	coapgw_coap_separate_responses_total           separate CON responses sent
//	coapgw_coap_separate_retransmissions_total     their retransmissions
//	coapgw_coap_separate_acked_total               separate responses the peer acknowledged (ACK)
//	coapgw_coap_separate_rejected_total            separate responses the peer rejected (RST)
//	coapgw_coap_separate_gave_up_total             separate responses given up after MAX_RETRANSMIT
//	coapgw_coap_separate_limited_total             separate responses sent fewer times (or not at
//	                                               all) to keep within MaxAmplification
//	coapgw_coap_block1_total{outcome}              blocks of request bodies and bodies, by outcome
//	coapgw_coap_block1_bodies                      request bodies in reassembly
//	coapgw_coap_block1_bytes                       bytes they are counted for
//	coapgw_coap_block2_responses_total             responses sent as one block of a larger payload
type Metrics struct {
	disps               [numDisp]prometheus.Counter
	codes               [256]prometheus.Counter
	respVec             *prometheus.CounterVec
	rst                 prometheus.Counter
	emptyAcks           prometheus.Counter
	separate            prometheus.Counter
	separateRetransmits prometheus.Counter
	separateAcked       prometheus.Counter
	separateRejected    prometheus.Counter
	separateGaveUp      prometheus.Counter
	separateLimited     prometheus.Counter
	block1Out           [numBlockOut]prometheus.Counter
	block1Bodies        prometheus.Gauge
	block1Bytes         prometheus.Gauge
	block2Responses     prometheus.Counter
	attachmentsDropped  prometheus.Counter
	observers           prometheus.Gauge
	notifications       [2]prometheus.Counter // non, con
	observersRemoved    [numRemoved]prometheus.Counter
	observersRefused    prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{}
	d := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coapgw_coap_datagrams_total", Help: "CoAP datagrams received, by disposition."}, []string{"disposition"})
	for i, n := range dispNames {
		m.disps[i] = d.WithLabelValues(n)
	}
	r := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coapgw_coap_responses_total", Help: "CoAP responses sent, by code (rst for Reset messages; replays of cached responses included)."}, []string{"code"})
	m.rst = r.WithLabelValues("rst")
	for _, c := range []coapmsg.Code{coapmsg.Changed, coapmsg.Content, coapmsg.BadRequest, coapmsg.BadOption, coapmsg.NotFound,
		coapmsg.MethodNotAllowed, coapmsg.RequestEntityTooLarge, coapmsg.Continue, coapmsg.RequestEntityIncomplete, coapmsg.UnsupportedFormat, coapmsg.InternalServerError, coapmsg.ServiceUnavailable} {
		m.codes[c] = r.WithLabelValues(c.String())
	}
	m.respVec = r
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m.emptyAcks = c("coapgw_coap_empty_acks_total", "Empty ACKs sent because the response was not ready within the piggyback deadline.")
	m.separate = c("coapgw_coap_separate_responses_total", "Separate CON responses sent.")
	m.separateRetransmits = c("coapgw_coap_separate_retransmissions_total", "Retransmissions of separate CON responses.")
	m.separateAcked = c("coapgw_coap_separate_acked_total", "Separate CON responses acknowledged by the peer (ACK).")
	m.separateRejected = c("coapgw_coap_separate_rejected_total", "Separate CON responses the peer rejected with a Reset (it no longer had the exchange).")
	m.separateGaveUp = c("coapgw_coap_separate_gave_up_total", "Separate CON responses given up after MAX_RETRANSMIT.")
	m.separateLimited = c("coapgw_coap_separate_limited_total", "Separate CON responses to an unverified address sent fewer times than MAX_RETRANSMIT allows, or not at all, to keep within 3 times the request.")
	b := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coapgw_coap_block1_total", Help: "Blocks of block-wise request bodies (continued, and the rejected ones by reason) and bodies (completed, evicted, expired), by outcome."}, []string{"outcome"})
	for i, n := range blockOutNames {
		m.block1Out[i] = b.WithLabelValues(n)
	}
	m.block1Bodies = prometheus.NewGauge(prometheus.GaugeOpts{Name: "coapgw_coap_block1_bodies", Help: "Block-wise request bodies being reassembled."})
	m.block1Bytes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "coapgw_coap_block1_bytes", Help: "Bytes the request bodies being reassembled are counted for (buffers and state)."})
	m.block2Responses = c("coapgw_coap_block2_responses_total", "Responses sent as one Block2 block of a larger payload.")
	m.attachmentsDropped = c("coapgw_coap_attachments_dropped_total", "2.xx answers sent without the payload attached to them (ResponseWriter.Attach): too large for a block or the amplification bound.")
	m.observers = prometheus.NewGauge(prometheus.GaugeOpts{Name: "coapgw_coap_observers", Help: "Observers registered (RFC 7641)."})
	nv := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coapgw_coap_notifications_total", Help: "Observe notifications sent, by type (con, non); retransmissions not included."}, []string{"type"})
	m.notifications[0], m.notifications[1] = nv.WithLabelValues("non"), nv.WithLabelValues("con")
	rv := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "coapgw_coap_observers_removed_total", Help: "Observers removed, by reason: rst (the client rejected a notification), timeout (a CON notification never acknowledged), deregistered (a GET without Observe or with Observe 1), replaced (the oldest of a resource with ObserversPerResource observers, by a new one)."}, []string{"reason"})
	for i, n := range removedNames {
		m.observersRemoved[i] = rv.WithLabelValues(n)
	}
	m.observersRefused = c("coapgw_coap_observers_refused_total", "Observe registrations answered as plain GETs because MaxObservers were registered.")
	if reg != nil {
		reg.MustRegister(m.observers, nv, rv, m.observersRefused)
		reg.MustRegister(d, r, m.emptyAcks, m.separate, m.separateRetransmits, m.separateAcked, m.separateRejected, m.separateGaveUp, m.separateLimited,
			b, m.block1Bodies, m.block1Bytes, m.block2Responses, m.attachmentsDropped)
	}
	return m
}

func (m *Metrics) disp(d disposition) { m.disps[d].Inc() }

func (m *Metrics) resp(c coapmsg.Code) {
	if ctr := m.codes[c]; ctr != nil {
		ctr.Inc()
		return
	}
	m.respVec.WithLabelValues(c.String()).Inc()
}
