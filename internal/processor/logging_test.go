package processor_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processor/spoolsource"
	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/spool"
)

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) lines(level string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(s, "level="+level) {
			out = append(out, s)
		}
	}
	return out
}

// A sink failing many times in a row is logged when it starts failing and when it succeeds
// again, with the count, not at every retry; the records a batch sets aside make one line.
func TestFailuresLoggedOncePerRun(t *testing.T) {
	sp := spool.NewMemory(spool.Options{})
	defer sp.Close()
	recs := []string{`{"v":1}`, `[1]`, `[2]`, `{"v":`, `{"v":2}`}
	var rs []record.Record
	for i, p := range recs {
		rs = append(rs, rec("a", float64(i), p))
	}
	last := fill(t, sp, rs...)
	sink := &processortest.Sink{Fail: func(ctx context.Context, call int) error {
		if call < 30 {
			return errors.New("database is locked")
		}
		return nil
	}}
	var logs logBuffer
	p, err := processor.New(processor.Config{Sleep: (&fakeSleep{}).Sleep}, sink,
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := runUntil(t, p, spoolsource.New(sp), func() bool { return sp.Stats().CommittedSeq == last }); err != nil {
		t.Fatal(err)
	}
	warns, infos := logs.lines("WARN"), logs.lines("INFO")
	if len(warns) != 1 || !strings.Contains(warns[0], "sink failing") {
		t.Errorf("Warn lines for 30 failed attempts: %q, want 1", warns)
	}
	var recovered, setAside []string
	for _, l := range infos {
		switch {
		case strings.Contains(l, "sink succeeds again"):
			recovered = append(recovered, l)
		case strings.Contains(l, "set aside"):
			setAside = append(setAside, l)
		}
	}
	if len(recovered) != 1 || !strings.Contains(recovered[0], "failed=30") {
		t.Errorf("recovery lines %q, want one with failed=30", recovered)
	}
	if len(setAside) != 1 || !strings.Contains(setAside[0], "records=3") || !strings.Contains(setAside[0], "first_seq=2") {
		t.Errorf("set-aside lines %q, want one with records=3 first_seq=2", setAside)
	}
}
