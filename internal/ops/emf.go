package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// EMF writes CloudWatch embedded metric format (EMF) documents: every Interval, one JSON object on
// one line holding the current value of each metric, with the metadata (_aws) that tells
// CloudWatch Logs to turn them into CloudWatch metrics in Namespace, once per gateway (the
// Dimensions, e.g. GatewayId) and once over all of them (no dimension). The gateway uses it for
// what CloudWatch cannot see from outside: the forwarder's lag and the spool's depth.
//
// Where the lines go (EMFConfig.Addr): "" writes them to the given writer (the gateway's log
// stream, stderr: a container's awslogs driver or any shipper to CloudWatch Logs extracts them
// there), "tcp://host:port" or "udp://host:port" sends them to the CloudWatch agent's EMF
// listener (127.0.0.1:25888 by default), which puts them in LogGroup. A failed write is logged
// once per run of failures (FailureRun) and the document is dropped: metrics never hold up the
// gateway. Config keys: emf_interval (0: off), emf_addr, emf_namespace, emf_log_group.
type EMF struct {
	cfg    EMFConfig
	out    io.Writer
	fails  *FailureRun
	buf    []byte
	now    func() time.Time
	closer io.Closer // the agent connection, if any
}

// EMFConfig configures an EMF writer.
type EMFConfig struct {
	Interval   time.Duration     // between documents; must be positive
	Addr       string            // "", tcp://host:port or udp://host:port
	Namespace  string            // CloudWatch namespace; required
	LogGroup   string            // _aws.LogGroupName (the agent's destination); empty: omitted
	Dimensions map[string]string // per-source dimensions, e.g. {"GatewayId": "i-0abc"}
	Metrics    []EMFMetric       // read at each interval, in this order
}

// EMFMetric is one metric: its CloudWatch name and unit (Seconds, Count, Bytes, ...) and how to
// read its current value.
type EMFMetric struct {
	Name  string
	Unit  string
	Value func() float64
}

// NewEMF checks cfg; w receives the documents when cfg.Addr is empty. It does no I/O.
func NewEMF(cfg EMFConfig, w io.Writer, log *slog.Logger) (*EMF, error) {
	var errs []error
	if cfg.Interval <= 0 {
		errs = append(errs, fmt.Errorf("emf: interval %v must be positive", cfg.Interval))
	}
	if cfg.Namespace == "" || len(cfg.Namespace) > 255 {
		errs = append(errs, errors.New("emf: namespace must be 1-255 characters"))
	}
	if len(cfg.Metrics) == 0 || len(cfg.Metrics) > 100 {
		errs = append(errs, errors.New("emf: 1-100 metrics"))
	}
	for _, m := range cfg.Metrics {
		if _, clash := cfg.Dimensions[m.Name]; clash || m.Name == "" || m.Name == "_aws" || m.Value == nil {
			errs = append(errs, fmt.Errorf("emf: metric %q: needs a name other than a dimension's and a value", m.Name))
		}
	}
	e := &EMF{cfg: cfg, out: w, now: time.Now,
		fails: NewFailureRun(log, "EMF metrics cannot be written; dropping them", "EMF metrics are written again")}
	if cfg.Addr != "" {
		u, err := url.Parse(cfg.Addr)
		if err != nil || (u.Scheme != "tcp" && u.Scheme != "udp") || u.Host == "" || u.Path != "" {
			errs = append(errs, fmt.Errorf("emf: address %q: want tcp://host:port or udp://host:port", cfg.Addr))
		} else {
			c := &agentConn{network: u.Scheme, addr: u.Host}
			e.out, e.closer = c, c
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return e, nil
}

// Run writes a document every interval until ctx ends, and one last one then.
func (e *EMF) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	defer func() {
		e.Write()
		if e.closer != nil {
			e.closer.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			e.Write()
		}
	}
}

// Write writes one document now.
func (e *EMF) Write() {
	e.buf = e.Append(e.buf[:0], e.now())
	if _, err := e.out.Write(e.buf); err != nil {
		e.fails.Fail(err)
		return
	}
	e.fails.OK()
}

// Append appends the document for time now, with its newline, to dst.
func (e *EMF) Append(dst []byte, now time.Time) []byte {
	dst = append(dst, `{"_aws":{"Timestamp":`...)
	dst = strconv.AppendInt(dst, now.UnixMilli(), 10)
	if e.cfg.LogGroup != "" {
		dst = append(dst, `,"LogGroupName":`...)
		dst = strconv.AppendQuote(dst, e.cfg.LogGroup)
	}
	dst = append(dst, `,"CloudWatchMetrics":[{"Namespace":`...)
	dst = strconv.AppendQuote(dst, e.cfg.Namespace)
	dst = append(dst, `,"Dimensions":[`...)
	if len(e.cfg.Dimensions) > 0 {
		dst = append(dst, '[')
		for i, k := range sortedKeys(e.cfg.Dimensions) {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = strconv.AppendQuote(dst, k)
		}
		dst = append(dst, "],"...)
	}
	dst = append(dst, `[]],"Metrics":[`...)
	for i, m := range e.cfg.Metrics {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"Name":`...)
		dst = strconv.AppendQuote(dst, m.Name)
		if m.Unit != "" {
			dst = append(dst, `,"Unit":`...)
			dst = strconv.AppendQuote(dst, m.Unit)
		}
		dst = append(dst, '}')
	}
	dst = append(dst, "]}]}"...)
	for _, k := range sortedKeys(e.cfg.Dimensions) {
		dst = append(dst, ',')
		dst = strconv.AppendQuote(dst, k)
		dst = append(dst, ':')
		dst = strconv.AppendQuote(dst, e.cfg.Dimensions[k])
	}
	for _, m := range e.cfg.Metrics {
		v := m.Value()
		if math.IsNaN(v) || math.IsInf(v, 0) {
			v = 0 // CloudWatch refuses them; JSON cannot carry them
		}
		dst = append(dst, ',')
		dst = strconv.AppendQuote(dst, m.Name)
		dst = append(dst, ':')
		dst = strconv.AppendFloat(dst, v, 'g', -1, 64)
	}
	return append(dst, "}\n"...)
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// agentConn writes to the CloudWatch agent's EMF listener, dialling on first use and again after
// a failed write. Over UDP each document is one datagram; over TCP documents are newline-delimited.
type agentConn struct {
	network, addr string
	mu            sync.Mutex
	c             net.Conn
}

func (a *agentConn) Write(b []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.c == nil {
		c, err := net.DialTimeout(a.network, a.addr, 2*time.Second)
		if err != nil {
			return 0, err
		}
		a.c = c
	}
	a.c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	n, err := a.c.Write(b)
	if err != nil {
		a.c.Close()
		a.c = nil
	}
	return n, err
}

func (a *agentConn) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.c == nil {
		return nil
	}
	err := a.c.Close()
	a.c = nil
	return err
}
