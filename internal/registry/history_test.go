package registry

import (
	"context"
	"errors"
	"fmt"
	"github.com/coapgw/coapgw/internal/record"
	"math"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLogAndChunkEncoding(t *testing.T) {
	es := []entry{
		{thing: 7, t: -5, vals: appendValue(nil, 1, 1.5)},
		{thing: 1 << 40, t: 1 << 60, vals: append(appendValue(nil, 2, -3), appendValue(nil, 300, 4)...)},
		{thing: 3, t: 0, vals: nil},
	}
	var log []byte
	for _, e := range es {
		log = appendLogEntry(log, e.thing, e.t, e.vals)
	}
	got, err := decodeLog(nil, log)
	if err != nil || len(got) != len(es) {
		t.Fatalf("decodeLog: %d entries, %v", len(got), err)
	}
	for i := range es {
		if got[i].thing != es[i].thing || got[i].t != es[i].t || string(got[i].vals) != string(es[i].vals) {
			t.Errorf("log entry %d: %+v, want %+v", i, got[i], es[i])
		}
	}
	chunk := []entry{{thing: 9, t: 100, vals: appendValue(nil, 1, 1)}, {thing: 9, t: 100, vals: appendValue(nil, 1, 2)}, {thing: 9, t: 5000, vals: appendValue(nil, 2, 3)}}
	c := appendChunk(nil, chunk)
	// Two chunks with the same first time concatenate (what the insert does on a key conflict).
	got, err = decodeChunk(nil, 9, 100, append(c, appendChunk(nil, chunk[:1])...))
	if err != nil || !reflect.DeepEqual(got, append(chunk, chunk[0])) {
		t.Errorf("decodeChunk: %+v, %v", got, err)
	}
	var vs []string
	eachValue(got[2].vals, func(p int64, v float64) { vs = append(vs, fmt.Sprint(p, v)) })
	if !reflect.DeepEqual(vs, []string{"2 3"}) {
		t.Errorf("eachValue: %v", vs)
	}
	// A log cut anywhere but between entries is corrupt.
	bounds := map[int]bool{}
	n := 0
	for _, e := range es {
		n += len(appendLogEntry(nil, e.thing, e.t, e.vals))
		bounds[n] = true
	}
	for i := 1; i < len(log); i++ {
		if _, err := decodeLog(nil, log[:i]); (err == nil) != bounds[i] {
			t.Errorf("log cut at %d of %d: %v", i, len(log), err)
		}
	}
	if _, err := decodeChunk(nil, 9, 100, c[:len(c)-1]); !errors.Is(err, errCorruptHistory) {
		t.Errorf("truncated chunk: %v", err)
	}
}

// A thing whose records in two compactions start at the same nanosecond gets one chunk holding
// both; the history shows each time once.
func TestHistoryChunkKeyConflict(t *testing.T) {
	e := newEnv(t, Options{logMax: 1})
	e.send(rec("sensor", "a", 5, `{"x":1}`))
	e.send(rec("sensor", "a", 5, `{"x":2}`), rec("sensor", "a", 6, `{"x":3}`))
	e.send(rec("sensor", "b", 7, `{"y":1}`)) // compacts the generation with the second batch
	var chunks, n int
	e.r.rdb.QueryRow(`SELECT count(*), sum(n) FROM history WHERE thing_id = (SELECT id FROM things WHERE name = 'a')`).Scan(&chunks, &n)
	if chunks != 1 || n != 3 {
		t.Errorf("%d chunks with %d entries, want 1 with 3", chunks, n)
	}
	h, err := e.r.History(t.Context(), "a", HistoryQuery{})
	if err != nil || len(h) != 1 || len(h[0].Points) != 2 || !h[0].Points[0].T.Equal(at(5)) || h[0].Points[1].V != 3 {
		t.Errorf("history %+v, %v", h, err)
	}
}

// Entries still in the log and entries in chunks are read together, oldest first, and Since
// applies to both.
func TestHistoryLogAndChunks(t *testing.T) {
	e := newEnv(t, Options{logMax: 4})
	for i := range 5 { // 8 entries compacted, 2 left in the log
		e.send(rec("sensor", "a", float64(i), fmt.Sprintf(`{"x":%d}`, i)), rec("sensor", "b", float64(i), `{"y":1}`))
	}
	var logged int
	e.r.rdb.QueryRow(`SELECT coalesce(sum(entries), 0) FROM history_log`).Scan(&logged)
	if logged == 0 {
		t.Fatal("nothing left in the log: the test does not read both")
	}
	h, err := e.r.History(t.Context(), "a", HistoryQuery{Since: at(1)})
	if err != nil || len(h) != 1 || len(h[0].Points) != 4 {
		t.Fatalf("history %+v, %v", h, err)
	}
	for i, p := range h[0].Points {
		if !p.T.Equal(at(float64(i+1))) || p.V != float64(i+1) {
			t.Errorf("point %d: %+v", i, p)
		}
	}
}

// Readers running while batches are applied and the log is compacted see a thing's history
// without gaps or repeats: every read returns points 0..k for some k, each once.
func TestHistoryReadsDuringCompaction(t *testing.T) {
	e := newEnv(t, Options{logMax: 30, HistoryMaxPoints: 10_000})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var reads atomic.Int64
	for range 3 {
		wg.Go(func() {
			for ctx.Err() == nil {
				h, err := e.r.History(ctx, "a", HistoryQuery{Property: "v"})
				if errors.Is(err, ErrNotFound) || ctx.Err() != nil {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				reads.Add(1)
				if len(h) == 0 {
					continue
				}
				for i, p := range h[0].Points {
					if p.V != float64(i) {
						t.Errorf("read of %d points: point %d is %v", len(h[0].Points), i, p.V)
						return
					}
				}
			}
		})
	}
	for i := range 400 {
		e.send(rec("sensor", "a", float64(i), fmt.Sprintf(`{"v":%d}`, i)), rec("sensor", "b", float64(i), `{"w":1}`))
	}
	for reads.Load() < 100 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
	h, _ := e.r.History(t.Context(), "a", HistoryQuery{})
	if len(h) != 1 || len(h[0].Points) != 400 {
		t.Errorf("final history %+v", h)
	}
}

// Compaction runs a slice of things per Apply; the registry reopened at any point (mid-
// compaction included) holds every entry exactly once: in a chunk, or in the tail reloaded from
// the log, never both.
func TestHistoryCompactionAcrossReopens(t *testing.T) {
	const things, batches = 24, 60
	e := newEnv(t, Options{logMax: 100, HistoryMaxPoints: 10_000})
	midCompaction := 0
	for b := range batches {
		var recs []record.Record
		for i := range things {
			recs = append(recs, rec("sensor", fmt.Sprintf("t%02d", i), float64(b), fmt.Sprintf(`{"v":%d}`, b)))
		}
		e.send(recs...)
		if b%4 != 0 {
			var n int // a generation partly compacted
			e.r.rdb.QueryRow(`SELECT count(*) FROM history_compacting WHERE cursor > ?`, int64(math.MinInt64)).Scan(&n)
			midCompaction += n
			e.reopen()
		}
	}
	if midCompaction == 0 {
		t.Fatal("never reopened during a compaction: the test covers nothing")
	}
	var chunked int
	e.r.rdb.QueryRow(`SELECT coalesce(sum(n), 0) FROM history`).Scan(&chunked)
	if chunked < things*batches/2 {
		t.Errorf("only %d of %d entries compacted", chunked, things*batches)
	}
	for i := range things {
		name := fmt.Sprintf("t%02d", i)
		var id int64
		var n int
		e.r.rdb.QueryRow(`SELECT id FROM things WHERE name = ?`, name).Scan(&id)
		e.r.rdb.QueryRow(`SELECT coalesce(sum(n), 0) FROM history WHERE thing_id = ?`, id).Scan(&n)
		tl := &e.r.w.tail
		n += len(thingEntries(nil, tl.cur, id)) + len(thingEntries(nil, tl.frozen, id))
		if n != batches {
			t.Errorf("%s: %d entries stored, want %d", name, n, batches)
		}
		h, err := e.r.History(t.Context(), name, HistoryQuery{})
		if err != nil || len(h) != 1 || len(h[0].Points) != batches {
			t.Fatalf("%s: history %+v, %v", name, h, err)
		}
		for b, p := range h[0].Points {
			if p.V != float64(b) {
				t.Errorf("%s: point %d is %v", name, b, p.V)
				break
			}
		}
	}
}
