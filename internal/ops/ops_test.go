package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "WARN", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", "k", 1)
	if s := buf.String(); strings.Contains(s, "hidden") || !strings.Contains(s, `"msg":"shown"`) || !strings.Contains(s, `"k":1`) {
		t.Fatalf("json at warn: %q", s)
	}
	buf.Reset()
	log, _ = NewLogger(&buf, "debug", "text")
	log.Debug("dbg")
	if !strings.Contains(buf.String(), "level=DEBUG msg=dbg") {
		t.Fatalf("text at debug: %q", buf.String())
	}
	for _, bad := range [][2]string{{"loud", "text"}, {"info", "xml"}} {
		if _, err := NewLogger(io.Discard, bad[0], bad[1]); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgw_test_total", Help: "x"}))
	cfg.Addr = "127.0.0.1:0"
	s := New(cfg, reg, nil)
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s
}

func TestEndpoints(t *testing.T) {
	var failed atomic.Pointer[error]
	s := start(t, Config{
		Ready: func() error {
			if p := failed.Load(); p != nil {
				return *p
			}
			return nil
		},
		Details: func() map[string]any { return map[string]any{"spool_depth": 3} },
	})
	s.Handle("GET /extra", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "role route") }))
	base := "http://" + s.Addr()
	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "coapgw_test_total 0") {
		t.Fatalf("/metrics %d %s", code, body)
	}
	if code, body := get(t, base+"/healthz"); code != 200 || body != "{\"status\":\"ok\"}\n" {
		t.Fatalf("/healthz %d %q", code, body)
	}
	var rd map[string]any
	code, body := get(t, base+"/readyz")
	if json.Unmarshal([]byte(body), &rd); code != 200 || rd["status"] != "ready" || rd["spool_depth"] != 3.0 {
		t.Fatalf("/readyz %d %s", code, body)
	}
	err := errors.New("processor stopped: disk gone")
	failed.Store(&err)
	code, body = get(t, base+"/readyz")
	if json.Unmarshal([]byte(body), &rd); code != 503 || rd["status"] != "not ready" || rd["reason"] != "processor stopped: disk gone" || rd["spool_depth"] != 3.0 {
		t.Fatalf("/readyz after a failure %d %s", code, body)
	}
	if code, body := get(t, base+"/extra"); code != 200 || body != "role route" {
		t.Fatalf("role route %d %q", code, body)
	}
	if code, _ := get(t, base+"/debug/pprof/"); code != 404 {
		t.Fatalf("pprof without --pprof: %d", code)
	}
}

func TestPprof(t *testing.T) {
	s := start(t, Config{Pprof: true})
	if code, body := get(t, "http://"+s.Addr()+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("pprof %d", code)
	}
}

func TestListenFails(t *testing.T) {
	s := New(Config{Addr: "127.0.0.1:99999"}, prometheus.NewRegistry(), nil)
	if err := s.Listen(); err == nil {
		t.Fatal("bound port 99999")
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
