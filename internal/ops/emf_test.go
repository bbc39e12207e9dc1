package ops

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func testEMFConfig(addr string) EMFConfig {
	lag := 1.5
	return EMFConfig{
		Interval: 10 * time.Millisecond, Addr: addr, Namespace: "coapgw/prod", LogGroup: "/coapgw/prod/gateway-metrics",
		Dimensions: map[string]string{"GatewayId": "i-0abc"},
		Metrics: []EMFMetric{
			{Name: "ForwardLagSeconds", Unit: "Seconds", Value: func() float64 { return lag }},
			{Name: "SpoolDepth", Unit: "Count", Value: func() float64 { return 42 }},
			{Name: "Broken", Value: func() float64 { return math.NaN() }},
		},
	}
}

// checkEMFDoc decodes one document and checks it says what CloudWatch needs to extract the metrics.
func checkEMFDoc(t *testing.T, line []byte) {
	t.Helper()
	var doc struct {
		AWS struct {
			Timestamp         int64
			LogGroupName      string
			CloudWatchMetrics []struct {
				Namespace  string
				Dimensions [][]string
				Metrics    []struct{ Name, Unit string }
			}
		} `json:"_aws"`
		GatewayID         string  `json:"GatewayId"`
		ForwardLagSeconds float64 `json:"ForwardLagSeconds"`
		SpoolDepth        float64 `json:"SpoolDepth"`
		Broken            float64 `json:"Broken"`
	}
	if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' {
		t.Fatalf("not one line: %q", line)
	}
	if err := json.Unmarshal(line, &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, line)
	}
	cw := doc.AWS.CloudWatchMetrics
	if len(cw) != 1 || cw[0].Namespace != "coapgw/prod" || doc.AWS.LogGroupName != "/coapgw/prod/gateway-metrics" ||
		time.Since(time.UnixMilli(doc.AWS.Timestamp)) > time.Minute {
		t.Errorf("metadata %+v", doc.AWS)
	}
	if len(cw) == 1 && (len(cw[0].Dimensions) != 2 || strings.Join(cw[0].Dimensions[0], ",") != "GatewayId" || len(cw[0].Dimensions[1]) != 0) {
		t.Errorf("dimension sets %q, want [[GatewayId] []] (per gateway and over all)", cw[0].Dimensions)
	}
	if len(cw) == 1 && (len(cw[0].Metrics) != 3 || cw[0].Metrics[0].Name != "ForwardLagSeconds" || cw[0].Metrics[0].Unit != "Seconds") {
		t.Errorf("metric definitions %+v", cw[0].Metrics)
	}
	if doc.GatewayID != "i-0abc" || doc.ForwardLagSeconds != 1.5 || doc.SpoolDepth != 42 || doc.Broken != 0 {
		t.Errorf("values %+v", doc)
	}
}

// TestEMFLog: documents go to the log writer, one valid EMF line per interval, and a last one at
// the stop.
func TestEMFLog(t *testing.T) {
	var out syncWriter
	e, err := NewEMF(testEMFConfig(""), &out, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	for deadline := time.Now().Add(5 * time.Second); strings.Count(out.String(), "\n") < 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("documents after 5s: %q", out.String())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(out.String(), "\n")
	for _, line := range lines[:len(lines)-1] { // the last is the empty string after the last newline
		checkEMFDoc(t, []byte(line))
	}
}

// TestEMFAgent: over TCP and UDP to a listener standing in for the CloudWatch agent; a write to a
// closed port is dropped without blocking the gateway, and the next one reconnects.
func TestEMFAgent(t *testing.T) {
	t.Run("tcp", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		e, err := NewEMF(testEMFConfig("tcp://"+l.Addr().String()), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		e.Write()
		e.Write()
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for range 2 {
			line, err := r.ReadBytes('\n')
			if err != nil {
				t.Fatal(err)
			}
			checkEMFDoc(t, line)
		}
		e.closer.Close()
	})
	t.Run("udp", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		e, err := NewEMF(testEMFConfig("udp://"+pc.LocalAddr().String()), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer e.closer.Close()
		e.Write()
		buf := make([]byte, 65536)
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		checkEMFDoc(t, buf[:n])
	})
	t.Run("no agent", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		e, err := NewEMF(testEMFConfig("tcp://"+addr), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		e.Write()
		if n, _, last := e.fails.State(); n != 1 || last == nil {
			t.Errorf("failure run %d, %v; want one failure", n, last)
		}
	})
}

func TestEMFConfigErrors(t *testing.T) {
	good := testEMFConfig("")
	for name, mod := range map[string]func(*EMFConfig){
		"interval":   func(c *EMFConfig) { c.Interval = 0 },
		"namespace":  func(c *EMFConfig) { c.Namespace = "" },
		"no metrics": func(c *EMFConfig) { c.Metrics = nil },
		"dimension": func(c *EMFConfig) {
			c.Metrics = append(c.Metrics, EMFMetric{Name: "GatewayId", Value: func() float64 { return 0 }})
		},
		"no value":    func(c *EMFConfig) { c.Metrics = []EMFMetric{{Name: "X"}} },
		"http addr":   func(c *EMFConfig) { c.Addr = "http://127.0.0.1:25888" },
		"bare addr":   func(c *EMFConfig) { c.Addr = "127.0.0.1:25888" },
		"addr w/path": func(c *EMFConfig) { c.Addr = "tcp://127.0.0.1:25888/x" },
	} {
		c := good
		mod(&c)
		if _, err := NewEMF(c, &bytes.Buffer{}, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewEMF(good, &bytes.Buffer{}, nil); err != nil {
		t.Errorf("good config: %v", err)
	}
}

// syncWriter is a bytes.Buffer safe to write from Run's goroutine while the test reads it.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
