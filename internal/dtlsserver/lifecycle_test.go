package dtlsserver

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgw/coapgw/internal/coapserver"
)

// savedCount is the number of sessions in the state file name.
func savedCount(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return len(f.Sessions)
}

// TestServeShutdownAtOnce: a server shut down while its Serve, started just before in another
// goroutine, is still setting up (dispatchers, sender, restored sessions, janitor, reader):
// Shutdown returns, Serve returns nil, nothing it started outlives it (goleak), -race sees no
// unordered access, and a session saved in the state file is never lost: whether Shutdown came
// before Serve began (kept as loaded) or after (restored, then saved again), the next round
// loads it. Half the rounds have no state file; a quarter end Serve's context as Shutdown starts.
func TestServeShutdownAtOnce(t *testing.T) {
	state := t.TempDir() + "/sessions.json"
	ts := startServer(t, Config{StateFile: state})
	c, _, err := dial(t, ts.LocalAddr(), "sensor/dev-1", keys["sensor/dev-1"])
	if err != nil {
		t.Fatal(err)
	}
	post(t, c, "sensor/dev-1", "x")
	ts.stop(t)
	if n := savedCount(t, state); n != 1 {
		t.Fatalf("%d sessions saved, want 1", n)
	}

	rounds := 200
	if testing.Short() {
		rounds = 20
	}
	for i := range rounds {
		cfg := Config{Addr: "127.0.0.1:0", PSK: lookup}
		withState := i%2 == 0
		if withState {
			cfg.StateFile = state
		}
		s, err := New(cfg, &seen{}, coapserver.Options{}, nil, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Listen(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- s.Serve(ctx) }()
		if i%4 == 1 || i%4 == 2 {
			go cancel()
		}
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.Shutdown(sctx); err != nil {
			t.Fatalf("round %d: Shutdown: %v", i, err)
		}
		scancel()
		select {
		case err := <-served:
			if err != nil {
				t.Fatalf("round %d: Serve: %v", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: Serve did not return after Shutdown", i)
		}
		cancel()
		if withState {
			if n := savedCount(t, state); n != 1 {
				t.Fatalf("round %d: %d sessions saved, want the 1 loaded", i, n)
			}
		}
	}
}
