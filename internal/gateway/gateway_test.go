package gateway

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
	"github.com/coapgw/coapgw/internal/config"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testConfig(t *testing.T) config.Config {
	cfg := config.Default()
	cfg.CoAP.Addr, cfg.HTTP.Addr, cfg.Spool.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.Spool.SegmentBytes, cfg.Spool.MaxBytes = 64*config.KiB, 4*config.MiB
	cfg.CoAP.FailLinger = 0
	return cfg
}

// start runs a gateway; wait returns Serve's result (once it returned, or after the timeout).
func start(t *testing.T, cfg config.Config) (g *Gateway, cancel context.CancelFunc, wait func(time.Duration) (bool, error)) {
	t.Helper()
	g, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var serveErr error
	go func() { serveErr = g.Serve(ctx); close(done) }()
	wait = func(d time.Duration) (bool, error) {
		select {
		case <-done:
			return true, serveErr
		case <-time.After(d):
			return false, nil
		}
	}
	t.Cleanup(func() {
		cancel()
		<-done
	})
	for !g.ready.Load() {
		time.Sleep(time.Millisecond)
	}
	return g, cancel, wait
}

func post(t *testing.T, g *Gateway, path, payload string) *coapmsg.Message {
	t.Helper()
	c, err := coaptest.Dial(g.CoAPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Post(path, payload)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func readyCode(t *testing.T, g *Gateway) int {
	t.Helper()
	resp, err := http.Get("http://" + g.HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestServeStops: cancelling Serve's context stops every actor in order, Serve returns nil, and
// nothing is left running (goleak).
func TestServeStops(t *testing.T) {
	g, cancel, wait := start(t, testConfig(t))
	if code := readyCode(t, g); code != 200 {
		t.Fatalf("/readyz %d", code)
	}
	if resp := post(t, g, "/sensor/dev-1", `{"a":1}`); resp.Code != coapmsg.Changed {
		t.Fatalf("POST %v", resp.Code)
	}
	cancel()
	ok, err := wait(20 * time.Second)
	if !ok || err != nil {
		t.Fatalf("Serve after a stop: returned %v, error %v", ok, err)
	}
}

// TestServeFailsWhenTheRegistryIsCorrupt: with --fail-linger 0 the gateway stops at once after
// its processor met a corrupt registry, and Serve returns the processor's error.
func TestServeFailsWhenTheRegistryIsCorrupt(t *testing.T) {
	cfg := testConfig(t)
	g, _, wait := start(t, cfg)
	post(t, g, "/sensor/dev-1", `{"a":1}`)
	for g.local.proc.Stats().Applied == 0 {
		time.Sleep(time.Millisecond)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(cfg.Spool.DataDir, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	var v int
	db.QueryRow("PRAGMA schema_version").Scan(&v)
	for _, q := range []string{"PRAGMA writable_schema=ON", "UPDATE sqlite_master SET rootpage=999999 WHERE name='things'", fmt.Sprintf("PRAGMA schema_version=%d", v+1)} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	post(t, g, "/sensor/dev-2", `{"a":2}`)
	ok, err := wait(20 * time.Second)
	if !ok {
		t.Fatal("Serve did not return after the processor died")
	}
	if err == nil || !strings.Contains(err.Error(), "processor: registry failed for good") || !permanentStoreError(err) {
		t.Fatalf("Serve: %v", err)
	}
}

func TestPermanentStoreError(t *testing.T) {
	if permanentStoreError(errors.New("database is locked")) || permanentStoreError(nil) {
		t.Fatal("a plain error counted as permanent")
	}
	if permanentStoreError(context.Canceled) {
		t.Fatal("cancellation counted as permanent")
	}
}

func TestGroupReportsAnActorThatDies(t *testing.T) {
	gr := newGroup()
	quiet := gr.start("quiet", func(ctx context.Context) error { <-ctx.Done(); return nil })
	gr.start("early", func(context.Context) error { return nil })
	select {
	case err := <-gr.failed:
		if err.Error() != "early: stopped unexpectedly" {
			t.Fatalf("failed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no failure reported")
	}
	gr.stopping.Store(true)
	if err := quiet.stop(); err != nil {
		t.Fatal(err)
	}
	gr.wg.Wait()
	select {
	case err := <-gr.failed:
		t.Fatalf("a stop reported as a failure: %v", err)
	default:
	}
}

func TestForwardConfig(t *testing.T) {
	c := config.Default().Forward
	f := forwardConfig(c)
	if f.Concurrency != 4 || f.MaxPending != 1024 || f.Linger != 10*time.Millisecond || f.BackoffBase != 100*time.Millisecond ||
		f.BackoffMax != 30*time.Second || f.MaxRejects != 3 || f.CommitInterval != 100*time.Millisecond ||
		f.ShutdownGrace != 5*time.Second || f.MaxWaiters != 65536 {
		t.Fatalf("%+v", f)
	}
	c.Linger = 0
	if f := forwardConfig(c); f.Linger >= 0 {
		t.Fatalf("--forward-linger 0 must mean never wait, got %v", f.Linger)
	}
}
