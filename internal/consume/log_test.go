package consume

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// setAsideMsg is the message of the log line for a set-aside record (worker and Lambda handler).
const setAsideMsg = "record set aside; the queue's redrive policy moves it to the DLQ after maxReceiveCount receives"

// logBuf is a concurrency-safe sink for a JSON slog handler: the worker logs from several
// goroutines while the test reads.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// newTestLogger returns a JSON logger (all levels) writing to the returned buffer.
func newTestLogger() (*slog.Logger, *logBuf) {
	buf := &logBuf{}
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// lines returns the decoded log lines whose msg is msg.
func (l *logBuf) lines(t testing.TB, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	text := l.b.String()
	l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, line)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// setAsideLog is what the set-aside log lines say about one message.
type setAsideLog struct {
	receives []string // the receive counts logged, in order, as text
	reasons  []string
}

// setAsideByID groups the set-aside log lines by message_id; every such line must be a WARN
// with a message_id, a receive count and a non-empty reason.
func (l *logBuf) setAsideByID(t testing.TB) map[string]*setAsideLog {
	t.Helper()
	by := map[string]*setAsideLog{}
	for _, m := range l.lines(t, setAsideMsg) {
		id, _ := m["message_id"].(string)
		reason, _ := m["reason"].(string)
		rc, hasRC := m["receives"].(float64) // a number, from the worker and the Lambda handler alike
		if m["level"] != "WARN" || id == "" || reason == "" || !hasRC {
			t.Errorf("set-aside log line lacks level WARN, message_id, a numeric receives or reason: %v", m)
			continue
		}
		if by[id] == nil {
			by[id] = &setAsideLog{}
		}
		by[id].receives = append(by[id].receives, strconv.Itoa(int(rc)))
		by[id].reasons = append(by[id].reasons, reason)
	}
	return by
}
