package forward

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/record"
)

// syncBuffer is a log destination for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(level string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range strings.Split(s.b.String(), "\n") {
		if strings.Contains(l, "level="+level) {
			out = append(out, l)
		}
	}
	return out
}

// An outage of many failed calls is logged once when it starts and once when it ends, with the
// number of failed calls, and Stats describes it while it lasts (for /readyz).
func TestOutageLoggedOncePerRun(t *testing.T) {
	mem := newMemory(t)
	seqs := appendRecords(t, mem, 0, 30, nil)
	var down atomic.Bool
	down.Store(true)
	pub := newFakePub(func(ctx context.Context, call int, recs []record.Record) ([]error, error) {
		if down.Load() {
			return nil, fmt.Errorf("dial tcp: connection refused (call %d)", call)
		}
		return nil, nil
	})
	var logs syncBuffer
	f, err := New(Config{Linger: -1, CommitInterval: time.Millisecond, BackoffBase: time.Millisecond, BackoffMax: 2 * time.Millisecond},
		mem, pub, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})), nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := started(t, f)
	waitFor(t, "20 failed calls", 10*time.Second, func() bool { return f.Stats().Failures >= 20 })
	st := f.Stats()
	if st.FailingSince.IsZero() || st.LastError == nil || !strings.Contains(st.LastError.Error(), "connection refused") || !st.Backoff {
		t.Errorf("stats during the outage: %+v", st)
	}
	down.Store(false)
	waitFor(t, "the cursor at the last record", 10*time.Second, func() bool { return mem.Stats().CommittedSeq == seqs[29] })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if st := f.Stats(); st.Failures != 0 || st.LastError != nil || !st.FailingSince.IsZero() {
		t.Errorf("stats after the outage: %+v", st)
	}
	warns, infos := logs.lines("WARN"), logs.lines("INFO")
	if len(warns) != 1 || !strings.Contains(warns[0], "queue calls failing") {
		t.Errorf("%d Warn lines for one outage, want 1:\n%s", len(warns), strings.Join(warns, "\n"))
	}
	if len(infos) != 1 || !strings.Contains(infos[0], "queue calls succeed again") {
		t.Fatalf("Info lines %q, want one saying the calls succeed again", infos)
	}
	// Calls already in flight when the first failed count with it, as one failure in a row.
	var failed int
	if _, err := fmt.Sscanf(infos[0][strings.Index(infos[0], "failed="):], "failed=%d", &failed); err != nil || failed < 20 {
		t.Errorf("recovery line %q, want failed=20 or more", infos[0])
	}
}

// failingCommits fails its first n commits.
type failingCommits struct {
	*checkSpool
	left atomic.Int32
}

func (s *failingCommits) Commit(seq uint64) error {
	if s.left.Add(-1) >= 0 {
		return errors.New("fsync: input/output error")
	}
	return s.checkSpool.Commit(seq)
}

// Cursor commits that keep failing (every CommitInterval) are logged once, not once per try.
func TestCommitFailuresLoggedOnce(t *testing.T) {
	mem := newMemory(t)
	seqs := appendRecords(t, mem, 0, 10, nil)
	pub := newFakePub(nil)
	sp := &failingCommits{checkSpool: &checkSpool{Log: mem, t: t, pub: pub, seqs: seqs}}
	sp.left.Store(25)
	var logs syncBuffer
	f, err := New(Config{Linger: -1, CommitInterval: time.Millisecond}, sp, pub,
		slog.New(slog.NewTextHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := started(t, f)
	waitFor(t, "the cursor at the last record", 10*time.Second, func() bool { return mem.Stats().CommittedSeq == seqs[9] })
	stop()
	warns, infos := logs.lines("WARN"), logs.lines("INFO")
	if len(warns) != 1 || !strings.Contains(warns[0], "spool cursor commits failing") {
		t.Errorf("Warn lines for 25 failed commits: %q, want 1", warns)
	}
	if len(infos) != 1 || !strings.Contains(infos[0], "failed=25") {
		t.Errorf("Info lines %q, want one with failed=25", infos)
	}
}
