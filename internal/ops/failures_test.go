package ops

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// A run of failures is logged twice, at its start and at its end with the count, however many
// failures it has, and State describes it while it lasts.
func TestFailureRunLogsOncePerRun(t *testing.T) {
	var buf bytes.Buffer
	f := NewFailureRun(slog.New(slog.NewTextHandler(&buf, nil)), "queue calls failing", "queue calls succeed again")
	clock := time.Unix(1000, 0)
	f.now = func() time.Time { return clock }
	f.OK() // nothing to end
	if n, _, _ := f.State(); n != 0 || buf.Len() != 0 {
		t.Fatalf("before any failure: state %d, log %q", n, buf.String())
	}
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() { f.Fail(fmt.Errorf("refused %d", i), "records", 10) })
	}
	wg.Wait()
	clock = clock.Add(3 * time.Second)
	n, since, last := f.State()
	if n != 100 || !since.Equal(time.Unix(1000, 0)) || last == nil {
		t.Fatalf("state %d since %v last %v, want 100 failures since 1000 s", n, since, last)
	}
	f.OK()
	f.OK()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d log lines for one run of 100 failures, want 2:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], `msg="queue calls failing"`) || !strings.Contains(lines[0], "records=10") {
		t.Errorf("first line %q, want the Warn with the error and attributes", lines[0])
	}
	if !strings.Contains(lines[1], "level=INFO") || !strings.Contains(lines[1], "failed=100") || !strings.Contains(lines[1], "for=3s") {
		t.Errorf("second line %q, want the Info with failed=100 for=3s", lines[1])
	}
	if n, _, _ := f.State(); n != 0 {
		t.Errorf("state %d after OK", n)
	}
	buf.Reset()
	if !f.Fail(errors.New("again")) || f.Fail(errors.New("again")) {
		t.Error("Fail did not report the start of the second run (only)")
	}
	if got := strings.Count(buf.String(), "level=WARN"); got != 1 {
		t.Errorf("second run: %d Warn lines, want 1", got)
	}
}
