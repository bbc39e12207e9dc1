package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
)

// TestDrainRefuses: Drain needs a queue, refuses a spool that serve still holds, and reports
// the records it could not forward (SQS unreachable until ctx ends) instead of claiming success;
// they stay in the spool.
func TestDrainRefuses(t *testing.T) {
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
		"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"} {
		t.Setenv(k, v)
	}
	log := slog.New(slog.DiscardHandler)
	cfg := testConfig(t)
	if _, err := Drain(t.Context(), cfg, log); err == nil || !strings.Contains(err.Error(), "no queue") {
		t.Errorf("drain without a queue: %v", err)
	}

	// Three records in the spool, as serve would have left them.
	sp, err := spool.Open(filepath.Join(cfg.Spool.DataDir, "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		b, err := record.Append(nil, &record.Record{GW: "gw-1", ReceivedAt: time.Now(), Type: "meter", ID: "m-1", Payload: []byte(`{"i":` + strconv.Itoa(i) + `}`)})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		if err := sp.Append(b, func(_ uint64, err error) { done <- err }); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	cfg.AWS.Queue, cfg.AWS.Endpoint = "https://sqs.us-east-1.amazonaws.com/123456789012/coapgw", dead
	if _, err := Drain(t.Context(), cfg, log); err == nil || !strings.Contains(err.Error(), "open spool") {
		t.Errorf("drain of a spool serve still holds: %v, want the spool's lock refusing", err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	res, err := Drain(ctx, cfg, log)
	if !errors.Is(err, ErrNotDrained) || res.Records != 3 || res.Remaining != 3 {
		t.Fatalf("drain with SQS unreachable = %+v, %v; want ErrNotDrained with 3 of 3 left", res, err)
	}
	sp, err = spool.Open(filepath.Join(cfg.Spool.DataDir, "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if d := sp.Stats().Depth; d != 3 {
		t.Errorf("after a failed drain the spool holds %d records, want 3", d)
	}
}
