package processor_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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
	// One line per reason: two records not an object, one not JSON.
	if len(setAside) != 2 || !strings.Contains(setAside[0], `reason="payload must be a JSON object" records=2 first_gw=gw1 first_seq=2 `) ||
		!strings.Contains(setAside[1], `reason="invalid JSON at byte 5: unexpected end" records=1 first_gw=gw1 first_seq=4 `) {
		t.Errorf("set-aside lines %q, want one per reason: records=2 first_seq=2, records=1 first_seq=4", setAside)
	}
}

// TestSetAsideLogSummarised (issue 15: 4,061 identical lines for one bench run): the records set
// aside are logged as one line per reason per interval with the count. The first record of a
// reason is logged at once; the later ones, over any number of batches, make one line when the
// interval ends (at the next batch, or by Run's timer when no batch comes); a reason quiet for
// an interval is logged at once again.
func TestSetAsideLogSummarised(t *testing.T) {
	var logs logBuffer
	clock := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	p, err := processor.New(processor.Config{Now: func() time.Time { return clock }, LogInterval: time.Minute},
		&processortest.Sink{}, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})), nil)
	if err != nil {
		t.Fatal(err)
	}
	seq := 0
	batch := func(payloads ...string) {
		t.Helper()
		var rs []record.Record
		for _, pl := range payloads {
			seq++
			r := rec("a", float64(seq), pl)
			r.Seq = uint64(seq)
			rs = append(rs, r)
		}
		if _, err := p.Process(t.Context(), processortest.Inputs(rs...)); err != nil {
			t.Fatal(err)
		}
	}
	lines := func() []string {
		var out []string
		for _, l := range logs.lines("INFO") {
			if strings.Contains(l, "records set aside") {
				out = append(out, l[strings.Index(l, "reason="):])
			}
		}
		return out
	}
	notObject, notJSON := `reason="payload must be a JSON object"`, `reason="invalid JSON at byte 5: unexpected end"`
	batch(`[1]`, `[2]`, `{"v":1}`, `{"v":`) // seq 1-4: both reasons logged at once
	for range 50 {                          // 4,000 more over 50 s: counted, not logged
		clock = clock.Add(time.Second)
		many := make([]string, 80)
		for i := range many {
			many[i] = `[3]`
		}
		batch(many...)
	}
	want := []string{notObject + " records=2 first_gw=gw1 first_seq=1 first_thing=a",
		notJSON + " records=1 first_gw=gw1 first_seq=4 first_thing=a"}
	if got := lines(); !slices.Equal(got, want) {
		t.Fatalf("lines after 50 s:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	clock = clock.Add(15 * time.Second) // the minute is over: the next batch logs the count
	batch(`{"v":2}`)
	want = append(want, notObject+" records=4000 first_gw=gw1 first_seq=5 first_thing=a over=1m5s")
	if got := lines(); !slices.Equal(got, want) {
		t.Fatalf("lines after the minute:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// notJSON had nothing more for a minute: its next record is logged at once.
	clock = clock.Add(time.Second)
	batch(`{"v":`, `[4]`)
	want = append(want, notJSON+" records=1 first_gw=gw1 first_seq=4006 first_thing=a")
	if got := lines(); !slices.Equal(got, want) {
		t.Fatalf("lines after notJSON again:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Run logs the pending count when the interval ends with no batch coming.
	var runLogs logBuffer
	p, err = processor.New(processor.Config{LogInterval: 100 * time.Millisecond}, &processortest.Sink{},
		slog.New(slog.NewTextHandler(&runLogs, &slog.HandlerOptions{Level: slog.LevelInfo})), nil)
	if err != nil {
		t.Fatal(err)
	}
	sp := spool.NewMemory(spool.Options{})
	defer sp.Close()
	fill(t, sp, rec("a", 1, `[1]`))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, spoolsource.New(sp)) }()
	count := func() int {
		n := 0
		for _, l := range runLogs.lines("INFO") {
			if strings.Contains(l, "records set aside") {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(5 * time.Second); count() < 1 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	fill(t, sp, rec("a", 2, `[2]`), rec("a", 3, `[3]`))
	for deadline := time.Now().Add(5 * time.Second); count() < 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if l := runLogs.lines("INFO"); count() != 2 || !strings.Contains(l[len(l)-1], "records=2 ") {
		t.Errorf("Run's lines %q, want the first record, then the two later ones when the interval ended", l)
	}
}
