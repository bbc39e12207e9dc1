package coapserver

import (
	"context"
	"testing"
	"time"
)

// TestServeShutdownAtOnce: a server shut down (or closed) while its Serve, started just before
// in another goroutine, is still setting up: Shutdown returns, Serve returns nil, nothing it
// started outlives it, and -race sees no unordered access (run with -race; Serve's setup and
// Shutdown's teardown overlap differently on each round).
func TestServeShutdownAtOnce(t *testing.T) {
	rounds := 200
	if testing.Short() {
		rounds = 20
	}
	for i := range rounds {
		cfg := Config{Addr: "127.0.0.1:0", Sockets: 1 + i%3}
		s, err := New(cfg, echoHandler{}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Listen(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- s.Serve(ctx) }()
		switch i % 4 {
		case 0, 1:
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := s.Shutdown(sctx); err != nil {
				t.Fatalf("round %d: Shutdown: %v", i, err)
			}
			scancel()
		case 2:
			s.Close()
		case 3: // Serve's context ends as Shutdown starts
			go cancel()
			if err := s.Shutdown(context.Background()); err != nil {
				t.Fatalf("round %d: Shutdown: %v", i, err)
			}
		}
		select {
		case err := <-served:
			if err != nil {
				t.Fatalf("round %d: Serve: %v", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: Serve did not return after Shutdown", i)
		}
		cancel()
	}
}

// TestEndpointStartStopOverlap: Start and Stop called from two goroutines with nothing else
// ordering them (as a transport's Serve and Shutdown may): Stop returns, and -race sees the
// timer goroutine's WaitGroup.Add ordered with Stop's Wait whichever comes first.
func TestEndpointStartStopOverlap(t *testing.T) {
	for range 500 {
		e := NewEndpoint(echoHandler{}, &fakeSender{}, Options{}, nil, nil)
		started := make(chan struct{})
		go func() { defer close(started); e.Start() }()
		e.Stop()
		<-started
		e.Stop() // idempotent; waits for a timer goroutine a late Start would have begun
	}
}
