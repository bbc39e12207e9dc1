package dtlsserver

import (
	"context"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coapgw/coapgw/third_party/pion-dtls"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
)

// benchServer starts a server for benchmarks (no registry: metrics are not what is measured).
func benchServer(b *testing.B, cfg Config) *Server {
	b.Helper()
	cfg.Addr, cfg.PSK = "127.0.0.1:0", lookup
	h := coapserver.HandlerFunc(func(w *coapserver.ResponseWriter, r *coapserver.Request) { w.Respond(coapmsg.Changed, nil) })
	s, err := New(cfg, h, coapserver.Options{}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	// The server's goroutines (and those pion starts from them) carry the label side=server:
	// go tool pprof -tagfocus side=server separates its CPU from the clients'.
	go pprof.Do(context.Background(), pprof.Labels("side", "server"), func(ctx context.Context) { done <- s.Serve(ctx) })
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		<-done
	})
	return s
}

// benchClient is a pion client session over a plain UDP socket.
func benchClient(b *testing.B, s *Server) (*dtls.Conn, *net.UDPConn) {
	b.Helper()
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	c, err := dtls.ClientWithOptions(u, net.UDPAddrFromAddrPort(s.LocalAddr()),
		dtls.WithPSK(func([]byte) ([]byte, error) { return keys["sensor/dev-1"], nil }),
		dtls.WithPSKIdentityHint([]byte("sensor/dev-1")),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
		dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
	)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		b.Fatal(err)
	}
	return c, u
}

func roundTrip(b *testing.B, c *dtls.Conn, req, buf []byte) {
	if _, err := c.Write(req); err != nil {
		b.Fatal(err)
	}
	if _, err := c.Read(buf); err != nil {
		b.Fatal(err)
	}
}

func request(mid uint16) []byte {
	m := coapmsg.Message{Type: coapmsg.Confirmable, Code: coapmsg.POST, MID: mid, Token: []byte{1, 2, 3, 4},
		Options: []coapmsg.Option{{Number: coapmsg.URIPath, Value: []byte("sensor")}, {Number: coapmsg.URIPath, Value: []byte("dev-1")}},
		Payload: []byte(`{"t":21.5,"h":40}`)}
	b, _ := m.Append(nil)
	return b
}

// BenchmarkSessionMemory establishes DTLS_BENCH_SESSIONS (default 1,000) sessions, drops the
// clients without telling the server (their sockets closed first), and reports the server's
// heap and RSS growth per established session: awake (in the record layer with its keys, after
// one request each) and hibernated (keys dropped). b.N is ignored beyond the first run.
//
//	DTLS_BENCH_SESSIONS=5000 go test -run XXX -bench SessionMemory -benchtime 1x ./internal/dtlsserver/
func BenchmarkSessionMemory(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("DTLS_BENCH_SESSIONS")); err == nil && v > 0 {
		n = v
	}
	for _, tc := range []struct {
		name      string
		hibernate time.Duration
	}{{"awake", -1}, {"hibernated", 20 * time.Millisecond}} {
		b.Run(tc.name, func(b *testing.B) {
			s := benchServer(b, Config{HibernateAfter: tc.hibernate})
			heap0, rss0 := memNow()
			g0 := runtime.NumGoroutine()
			buf := make([]byte, 2048)
			for i := 0; i < n; i++ {
				c, u := benchClient(b, s)
				roundTrip(b, c, request(uint16(i)), buf)
				u.Close() // the server must not hear a close_notify
				_ = c.Close()
			}
			if est, _ := s.Sessions(); est != n {
				b.Fatalf("%d sessions established, want %d", est, n)
			}
			if tc.hibernate > 0 {
				for s.hibernated.Load() != int64(n) {
					time.Sleep(10 * time.Millisecond)
				}
			}
			heap1, rss1 := memNow()
			b.ReportMetric(float64(heap1-heap0)/float64(n), "heap-B/session")
			b.ReportMetric(float64(rss1-rss0)/float64(n), "rss-B/session")
			b.ReportMetric(float64(runtime.NumGoroutine()-g0)/float64(n), "goroutines/session")
		})
	}
}

// memNow is the live heap after a GC and the process RSS after returning free memory to the OS (Linux; 0 elsewhere).
func memNow() (heap, rss int64) {
	runtime.GC()
	debug.FreeOSMemory() // RSS of what is live, not of garbage the runtime still holds
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			res, _ := strconv.ParseInt(f[1], 10, 64)
			rss = res * int64(os.Getpagesize())
		}
	}
	return int64(ms.HeapAlloc), rss
}

// BenchmarkMessages measures a CON POST and its 2.04 over established sessions, the clients
// (pion too, in this process) taking turns: ns/op and CPU are for client and server together.
//
//	go test -run XXX -bench Messages -benchmem ./internal/dtlsserver/
func BenchmarkMessages(b *testing.B) {
	for _, sessions := range []int{1, 64} {
		b.Run(strconv.Itoa(sessions), func(b *testing.B) {
			s := benchServer(b, Config{})
			conns := make([]*dtls.Conn, sessions)
			for i := range conns {
				c, u := benchClient(b, s)
				conns[i] = c
				defer func() { u.Close(); _ = c.Close() }()
			}
			buf := make([]byte, 2048)
			reqs := make([][]byte, 1<<16)
			for i := range reqs {
				reqs[i] = request(uint16(i))
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuNow()
			for i := 0; i < b.N; i++ {
				roundTrip(b, conns[i%sessions], reqs[(i/sessions)&0xffff], buf)
			}
			reportCPU(b, cpu0)
		})
	}
}

// BenchmarkHandshake measures full PSK handshakes with the cookie exchange, one after another
// (client and server in this process).
//
//	go test -run XXX -bench Handshake -benchmem ./internal/dtlsserver/
func BenchmarkHandshake(b *testing.B) {
	s := benchServer(b, Config{})
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuNow()
	for i := 0; i < b.N; i++ {
		c, u := benchClient(b, s)
		_ = c.Close()
		u.Close()
	}
	reportCPU(b, cpu0)
}

// BenchmarkPlainMessages is BenchmarkMessages over plain CoAP (coapserver.Server and a UDP
// client in this process): the baseline the DTLS figures are compared with.
//
//	go test -run XXX -bench 'Messages' -benchmem ./internal/dtlsserver/
func BenchmarkPlainMessages(b *testing.B) {
	h := coapserver.HandlerFunc(func(w *coapserver.ResponseWriter, r *coapserver.Request) { w.Respond(coapmsg.Changed, nil) })
	s, err := coapserver.New(coapserver.Config{Addr: "127.0.0.1:0"}, h, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go pprof.Do(context.Background(), pprof.Labels("side", "server"), func(ctx context.Context) { done <- s.Serve(ctx) })
	defer func() { s.Close(); <-done }()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(s.LocalAddr()))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2048)
	reqs := make([][]byte, 1<<16)
	for i := range reqs {
		reqs[i] = request(uint16(i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuNow()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(reqs[i&0xffff]); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu0)
}

// cpuNow is the process's user and system CPU time so far.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time (client and server, all threads) per operation since start.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64((cpuNow()-start).Microseconds())/float64(b.N), "cpu-us/op")
}
