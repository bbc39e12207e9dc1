package coapserver

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkBlock1Devices: 1,000 devices, each with its own UDP socket on loopback, send an
// 8 KiB body in 1 KiB blocks (Block1) to a UDP Server at the same time; one iteration is every
// device's body delivered. The handler checks each body byte for byte (and copies it, as the
// spool would). A device that gets 4.08 (its body evicted) or 5.03 starts its body again. It
// reports the bodies a second, peak-bytes (the most the reassembly held, sampled every 100 µs,
// against blockwise-max-bytes), restarts and lost (bodies that never completed: a benchmark
// with room for every body fails if one is lost or restarted).
//
//	go test -run '^$' -bench Block1Devices -benchtime 5x ./internal/coapserver/
func BenchmarkBlock1Devices(b *testing.B) {
	for _, c := range []struct {
		name     string
		maxBytes int
		strict   bool
	}{
		{"max=16MiB", 16 << 20, true}, // room for all 1,000 bodies (8,352 bytes each, counted)
		{"max=4MiB", 4 << 20, false},  // room for about 480: the rest are evicted and restart
	} {
		b.Run(c.name, func(b *testing.B) { benchBlock1Devices(b, 1000, 8192, c.maxBytes, c.strict) })
	}
}

func benchBlock1Devices(b *testing.B, devices, size, maxBytes int, strict bool) {
	bodies := make([][]byte, devices)
	for i := range bodies {
		p := []byte(`{"dev":` + strconv.Itoa(i) + `,"pad":"`)
		for len(p) < size-2 {
			p = append(p, 'a'+byte((len(p)+i)%26))
		}
		bodies[i] = append(p, '"', '}')
	}
	var completed, corrupt atomic.Int64
	h := HandlerFunc(func(w *ResponseWriter, r *Request) {
		i, err := strconv.Atoi(string(r.Path(1)))
		if err != nil || i >= devices || !bytes.Equal(r.Payload(), bodies[i]) {
			corrupt.Add(1)
			w.Respond(coapmsg.BadRequest, nil)
			return
		}
		_ = append([]byte(nil), r.Payload()...) // what the spool's encoding costs
		completed.Add(1)
		w.Respond(coapmsg.Changed, nil)
	})
	srv, err := New(Config{Addr: "127.0.0.1:0", Exchange: Options{BlockWise: true, MaxRequestBody: size, BlockMaxBytes: maxBytes,
		DedupPerPeerCap: 64}}, h, nil, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	defer func() { cancel(); srv.Close(); <-done }()
	clients := make([]*coaptest.Client, devices)
	for i := range clients {
		if clients[i], err = coaptest.Dial(srv.LocalAddr()); err != nil {
			b.Fatal(err)
		}
		clients[i].Timeout = 10 * time.Second
		defer clients[i].Close()
	}
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(100 * time.Microsecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if _, held := srv.Endpoint().BlockBodies(); int64(held) > peak.Load() {
				peak.Store(int64(held))
			}
		}
	}()
	var restarts, lost atomic.Int64
	b.ResetTimer()
	for range b.N {
		var wg sync.WaitGroup
		for i, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for try := 0; ; try++ {
					r, err := c.PostBlocks("/bench/"+strconv.Itoa(i), bodies[i], 6)
					switch {
					case err == nil && r.Code == coapmsg.Changed:
						return
					case try < 100 && err == nil && (r.Code == coapmsg.RequestEntityIncomplete || r.Code == coapmsg.ServiceUnavailable):
						restarts.Add(1)
					default:
						lost.Add(1)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	b.StopTimer()
	close(stop)
	<-sampled
	if n, held := srv.Endpoint().BlockBodies(); n != 0 || held != 0 {
		b.Fatalf("%d bodies (%d bytes) still in reassembly after every body completed", n, held)
	}
	if got, want := completed.Load(), int64(b.N*devices)-lost.Load(); got != want || corrupt.Load() != 0 {
		b.Fatalf("%d bodies completed, want %d; %d corrupt", got, want, corrupt.Load())
	}
	if peak.Load() > int64(maxBytes) {
		b.Fatalf("reassembly held %d bytes, bound %d", peak.Load(), maxBytes)
	}
	if strict && (lost.Load() != 0 || restarts.Load() != 0) {
		b.Fatalf("%d bodies lost, %d restarted with room for all", lost.Load(), restarts.Load())
	}
	b.ReportMetric(float64(b.N*devices)/b.Elapsed().Seconds(), "bodies/s")
	b.ReportMetric(float64(peak.Load()), "peak-bytes")
	b.ReportMetric(float64(restarts.Load())/float64(b.N), "restarts/op")
	b.ReportMetric(float64(lost.Load())/float64(b.N), "lost/op")
}

// BenchmarkBlock1Body is the exchange layer's cost of one 8 KiB body in eight 1 KiB blocks from
// one peer, with no network: eight HandleDatagram calls, seven 2.31 and the handler's 2.04.
//
//	go test -run '^$' -bench Block1Body -benchmem ./internal/coapserver/
func BenchmarkBlock1Body(b *testing.B) {
	var done int
	h := HandlerFunc(func(w *ResponseWriter, r *Request) { done++; w.Respond(coapmsg.Changed, nil) })
	e := NewEndpoint(h, discard{}, Options{BlockWise: true, MaxRequestBody: 8192, DedupPerPeerCap: 64}, nil, nil)
	body := make([]byte, 8192)
	var reqs [8][]byte
	for i := range reqs {
		reqs[i] = enc(b, blockReq(0, "sensor/d", body, uint32(i), 6))
	}
	b.ReportAllocs()
	b.ResetTimer()
	mid := uint16(0)
	for range b.N {
		for _, d := range reqs {
			mid++ // a new exchange each: the per-peer dedup cap (64) has long forgotten a MID when it comes round
			d[2], d[3] = byte(mid>>8), byte(mid)
			e.HandleDatagram(peerA, d)
		}
	}
	if done != b.N {
		b.Fatalf("%d bodies completed, want %d", done, b.N)
	}
}
