package coapserver

import (
	"bufio"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/coapgw/coapgw/internal/coapmsg"
)

// BenchmarkDedup100kPeers measures the memory the exchange layer holds for 100,000 distinct devices
// inside the dedup window (synthetic peer addresses: open files are capped at 20,000 here), each
// with a few exchanges remembered. It reports heap bytes per device and the process's peak RSS.
//
//	go test -run='^$' -bench=Dedup100kPeers -benchtime=1x ./internal/coapserver
func BenchmarkDedup100kPeers(b *testing.B) {
	const peers, perPeer = 100_000, 3
	reqs := make([][]byte, perPeer)
	for i := range reqs {
		m := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: uint16(i + 1), Token: []byte{1, 2, 3, 4},
			Options: []coapmsg.Option{{Number: coapmsg.URIPath, Value: []byte("t")}, {Number: coapmsg.URIPath, Value: []byte("i")}},
			Payload: []byte(`{"temp":21.5}`)}
		reqs[i], _ = m.Append(nil)
	}
	for n := 0; n < b.N; n++ {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		e := NewEndpoint(&countingHandler{}, discard{}, Options{}, nil, nil)
		for j := 0; j < perPeer; j++ {
			for i := 0; i < peers; i++ {
				p := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 40000)
				e.HandleDatagram(p, reqs[j])
			}
		}
		if got := e.DedupEntries(); got != peers*perPeer {
			b.Fatalf("%d dedup entries, want %d", got, peers*perPeer)
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/peers, "heap-B/device")
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/(peers*perPeer), "heap-B/entry")
		b.ReportMetric(float64(peakRSS())/(1<<20), "peak-RSS-MB")
		runtime.KeepAlive(e)
	}
}

// peakRSS is VmHWM from /proc/self/status, in bytes (0 where there is no /proc).
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
