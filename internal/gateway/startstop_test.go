package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"
)

// TestServeStopsAtOnce: a gateway with both transports (plain CoAP and DTLS) whose Serve is
// stopped as it starts (its context has ended already) shuts down cleanly, round after round:
// run.go's shutdown calls each transport's Shutdown while that transport's Serve, started a
// moment before in its own goroutine, is still setting up. Serve returns nil, nothing is left
// running (goleak), and -race sees no unordered access between the two.
func TestServeStopsAtOnce(t *testing.T) {
	rounds := 40
	if testing.Short() {
		rounds = 5
	}
	for i := range rounds {
		g, err := New(dtlsConfig(t, fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if !g.CoAPAddr().IsValid() || !g.CoAPSAddr().IsValid() {
			t.Fatalf("round %d: transports coap %v, coaps %v: want both open", i, g.CoAPAddr(), g.CoAPSAddr())
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		done := make(chan error, 1)
		go func() { done <- g.Serve(ctx) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: Serve: %v", i, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: Serve did not return", i)
		}
	}
}
