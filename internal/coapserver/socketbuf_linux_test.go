package coapserver

import (
	"bytes"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestSocketBufferCapped: a process that may not force its socket buffers (no CAP_NET_ADMIN, as
// under the shipped systemd unit) gets at most net.core.rmem_max. Listen then warns with the
// configured and the effective size and how to fix it, and the effective size is a metric; the
// cap used to be silent.
func TestSocketBufferCapped(t *testing.T) {
	raw, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		t.Skip(err)
	}
	rmemMax, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	forceBuffers = false
	t.Cleanup(func() { forceBuffers = true })

	want := 2 * rmemMax
	var logBuf bytes.Buffer
	reg := prometheus.NewRegistry()
	s, err := New(Config{Addr: "127.0.0.1:0", SocketBytes: want}, echoHandler{}, slog.New(slog.NewTextHandler(&logBuf, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	log := logBuf.String()
	for _, w := range []string{"level=WARN", "receive buffer is smaller than configured", "configured_bytes=" + strconv.Itoa(want),
		"effective_bytes=" + strconv.Itoa(rmemMax), "net.core.rmem_max=" + strconv.Itoa(want), "CAP_NET_ADMIN"} {
		if !strings.Contains(log, w) {
			t.Errorf("log lacks %q:\n%s", w, log)
		}
	}
	if got := gaugeValue(t, reg, "coapgw_udp_receive_buffer_bytes"); got != float64(rmemMax) {
		t.Errorf("coapgw_udp_receive_buffer_bytes = %v, want %d", got, rmemMax)
	}
}

// TestSocketBufferAsConfigured: a buffer within the limit gets no warning, and the metric says
// the configured size.
func TestSocketBufferAsConfigured(t *testing.T) {
	var logBuf bytes.Buffer
	reg := prometheus.NewRegistry()
	s, err := New(Config{Addr: "127.0.0.1:0", SocketBytes: 64 << 10}, echoHandler{}, slog.New(slog.NewTextHandler(&logBuf, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if strings.Contains(logBuf.String(), "WARN") {
		t.Errorf("a warning for a buffer within the limit:\n%s", logBuf.String())
	}
	if got := gaugeValue(t, reg, "coapgw_udp_receive_buffer_bytes"); got != 64<<10 {
		t.Errorf("coapgw_udp_receive_buffer_bytes = %v, want %d", got, 64<<10)
	}
}

// gaugeValue returns the value of reg's gauge name.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
