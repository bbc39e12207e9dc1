package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/spool"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// TestStorageErrFollowsAppends (issue 11, finding 2): while spool appends fail, StorageErr (the
// gateway's /readyz) reports why, and the failures are logged once per change of state with a
// count, not once per request; an append that succeeds again clears it, and so does a quiet
// --retry-after without failures (a gateway taken out of service for it is tried again).
func TestStorageErrFollowsAppends(t *testing.T) {
	r := newRigWith(t, Config{GatewayID: "gw-test", RetryAfter: 5})
	var logs lockedBuffer
	r.h.appends.log = slog.New(slog.NewTextHandler(&logs, nil))
	now := time.Unix(1_700_000_000, 0)
	r.h.appends.now = func() time.Time { return now }
	post := func(want coapmsg.Code) {
		t.Helper()
		if resp := r.do(coapmsg.POST, pathOpts("sensor", "dev-1"), `{"t":1}`); resp.Code != want {
			t.Fatalf("answer %v, want %v", resp.Code, want)
		}
	}

	post(coapmsg.Changed)
	if err := r.h.StorageErr(); err != nil {
		t.Fatalf("StorageErr with a healthy spool: %v", err)
	}
	emfile := fmt.Errorf("%w: write cursor: open cursor.tmp: %w", spool.ErrUnavailable, syscall.EMFILE)
	r.sp.fail = emfile // the durable write fails (the callback's error)
	for range 10 {
		post(coapmsg.ServiceUnavailable)
	}
	err := r.h.StorageErr()
	if err == nil || !errors.Is(err, syscall.EMFILE) || !strings.Contains(err.Error(), "10 since") {
		t.Fatalf("StorageErr while appends fail: %v", err)
	}
	r.sp.fail, r.sp.err = nil, spool.ErrFull // now Append refuses at once: a new reason
	for range 5 {
		post(coapmsg.ServiceUnavailable)
	}
	if err := r.h.StorageErr(); !errors.Is(err, spool.ErrFull) || !strings.Contains(err.Error(), "5 since") {
		t.Fatalf("StorageErr while the spool is full: %v", err)
	}
	out := logs.String()
	if n := strings.Count(out, "spool appends failing"); n != 2 {
		t.Fatalf("%d failure lines for two reasons, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "failed=10") {
		t.Fatalf("the change of reason does not count the earlier failures:\n%s", out)
	}

	// Quiet for --retry-after: ready again, so traffic comes back; the next failure is reported.
	now = now.Add(6 * time.Second)
	if err := r.h.StorageErr(); err != nil {
		t.Fatalf("StorageErr after a quiet --retry-after: %v", err)
	}
	post(coapmsg.ServiceUnavailable)
	if r.h.StorageErr() == nil {
		t.Fatal("a failure after the quiet period is not reported")
	}

	r.sp.err = nil
	post(coapmsg.Changed)
	if err := r.h.StorageErr(); err != nil {
		t.Fatalf("StorageErr after an append succeeded: %v", err)
	}
	out = logs.String()
	if !strings.Contains(out, "spool appends succeed again") || !strings.Contains(out, "failed=6") {
		t.Fatalf("no recovery line with the count:\n%s", out)
	}
	if n := strings.Count(out, "level=WARN"); n != 2 {
		t.Fatalf("%d WARN lines for 16 failed requests, want 2:\n%s", n, out)
	}
}
