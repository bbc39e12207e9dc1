package coapserver

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
)

// TestShutdownWaitsForInflight: a request being handled when Shutdown starts is answered before
// the sockets close, Shutdown returns as soon as it is (not after ctx), and Serve returns.
func TestShutdownWaitsForInflight(t *testing.T) {
	s := startUDP(t, echoHandler{delay: 300 * time.Millisecond}, Config{})
	c, err := coaptest.Dial(s.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := c.Request(coapmsg.NonConfirmable, coapmsg.POST, "/a/b", []byte("late"))
	b, _ := req.Append(nil)
	if err := c.Send(b); err != nil {
		t.Fatal(err)
	}
	for s.Endpoint().Inflight() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
	resp, err := c.Read(2 * time.Second)
	if err != nil || string(resp.Payload) != "late" {
		t.Fatalf("the in-flight request was not answered: %v %+v", err, resp)
	}
	// Nothing is read any more.
	req = c.Request(coapmsg.Confirmable, coapmsg.POST, "/a/b", []byte("after"))
	b, _ = req.Append(nil)
	c.Send(b)
	if m, err := c.Read(300 * time.Millisecond); err == nil {
		t.Fatalf("answered after Shutdown: %+v", m)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

// TestShutdownDeadline: when ctx ends first, Shutdown closes anyway and names what was left.
func TestShutdownDeadline(t *testing.T) {
	s := startUDP(t, echoHandler{delay: time.Hour}, Config{})
	c, err := coaptest.Dial(s.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := c.Request(coapmsg.NonConfirmable, coapmsg.POST, "/a/b", []byte("never"))
	b, _ := req.Append(nil)
	c.Send(b)
	for s.Endpoint().Inflight() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = s.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 requests unanswered") {
		t.Fatalf("Shutdown past its deadline: %v", err)
	}
}
