package processor_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
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
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir) // never returns
	}
	goleak.VerifyTestMain(m)
}

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

func rec(id string, sec float64, payload string) record.Record {
	return processortest.Rec("gw1", "sensor", id, at(sec), payload)
}

// fakeSleep records the waits asked for and returns at once.
type fakeSleep struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (f *fakeSleep) Sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	f.waits = append(f.waits, d)
	f.mu.Unlock()
	return ctx.Err()
}

// metricValue returns a counter's or gauge's value from reg; result selects the result label.
func metricValue(t *testing.T, reg *prometheus.Registry, name, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if result != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != result) {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s{%s} not found", name, result)
	return 0
}

func newProcessor(t *testing.T, cfg processor.Config, sink processor.Sink, reg prometheus.Registerer) *processor.Processor {
	t.Helper()
	p, err := processor.New(cfg, sink, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runUntil runs p over src in the background until cond holds (polling), then stops it and
// returns Run's result.
func runUntil(t *testing.T, p *processor.Processor, src processor.Source, cond func() bool) error {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, src) }()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	return <-done
}

func fill(t *testing.T, sp spool.Log, recs ...record.Record) uint64 {
	t.Helper()
	var last uint64
	for _, e := range processortest.Entries(t, recs...) {
		if err := sp.Append(e.Data, nil); err != nil {
			t.Fatal(err)
		}
		last++
	}
	for sp.Stats().NextSeq <= last {
		time.Sleep(time.Millisecond)
	}
	return last
}

func TestNewValidates(t *testing.T) {
	sink := &processortest.Sink{}
	for _, cfg := range []processor.Config{{BatchSize: -1}, {BackoffMin: -time.Second}, {BackoffMin: time.Minute, BackoffMax: time.Second}} {
		if _, err := processor.New(cfg, sink, nil, nil); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	if _, err := processor.New(processor.Config{}, nil, nil, nil); err == nil {
		t.Error("New with a nil sink accepted")
	}
	reg := prometheus.NewRegistry()
	newProcessor(t, processor.Config{}, sink, reg)
	if _, err := processor.New(processor.Config{}, sink, nil, reg); err == nil {
		t.Error("registering the metrics twice was accepted")
	}
}

// One sink update per thing per batch, its records merged in received_at order (not seq order).
func TestCoalescing(t *testing.T) {
	sink := &processortest.Sink{}
	p := newProcessor(t, processor.Config{}, sink, nil)
	es := processortest.Inputs(
		rec("a", 3, `{"temp":23,"hum":1}`),
		rec("b", 1, `{"x":1}`),
		rec("a", 1, `{"temp":21,"bat":3}`), // older than the first, delivered later
		rec("a", 2, `{"temp":22,"hum":null}`),
		rec("b", 2, `{"y":2}`),
	)
	out, err := p.Process(t.Context(), es)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		if o.Result != processor.Applied {
			t.Errorf("record %d: %+v", i, o)
		}
	}
	bs := sink.Batches()
	if len(bs) != 1 || len(bs[0].Updates) != 2 {
		t.Fatalf("want 1 batch with 2 updates, got %d batches", len(bs))
	}
	ua := bs[0].Updates[0]
	if ua.Thing != "a" || !slices.Equal(ua.Items, []int{2, 3, 0}) {
		t.Errorf("update a: thing %s items %v, want a [2 3 0] (by received_at)", ua.Thing, ua.Items)
	}
	if got, want := string(ua.Doc.AppendState(nil)), `{"bat":3,"hum":1,"temp":23}`; got != want {
		t.Errorf("coalesced a = %s, want %s", got, want)
	}
	if got, want := string(bs[0].Updates[1].Doc.AppendState(nil)), `{"x":1,"y":2}`; got != want {
		t.Errorf("coalesced b = %s, want %s", got, want)
	}
}

// A failing sink is retried with exponential backoff (fake sleep); the spool is not committed
// until the sink succeeds.
func TestTransientRetry(t *testing.T) {
	sp := spool.NewMemory(spool.Options{})
	defer sp.Close()
	last := fill(t, sp, rec("a", 1, `{"v":1}`), rec("a", 2, `{"v":2}`))
	var committedWhileFailing []uint64
	sink := &processortest.Sink{Fail: func(ctx context.Context, call int) error {
		committedWhileFailing = append(committedWhileFailing, sp.Stats().CommittedSeq)
		if call < 4 {
			return errors.New("database is locked")
		}
		return nil
	}}
	fs := &fakeSleep{}
	reg := prometheus.NewRegistry()
	p := newProcessor(t, processor.Config{BackoffMin: time.Second, BackoffMax: 5 * time.Second, Sleep: fs.Sleep}, sink, reg)
	if err := runUntil(t, p, spoolsource.New(sp), func() bool { return sp.Stats().CommittedSeq == last }); err != nil {
		t.Fatal(err)
	}
	for i, c := range committedWhileFailing {
		if c != 0 {
			t.Errorf("call %d: spool committed to %d before the sink succeeded", i, c)
		}
	}
	if len(fs.waits) != 4 {
		t.Fatalf("waits %v, want 4", fs.waits)
	}
	for i, d := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second} {
		if w := fs.waits[i]; w < d/2 || w > d {
			t.Errorf("wait %d = %v, want within [%v, %v]", i, w, d/2, d)
		}
	}
	if got := sink.State("a"); got != `{"v":2}` {
		t.Errorf("state %s", got)
	}
	if got := metricValue(t, reg, "coapgw_processor_retries_total", ""); got != 4 {
		t.Errorf("retries_total = %v, want 4", got)
	}
	if st := p.Stats(); st.Retries != 4 || st.Batches != 1 || st.Applied != 2 || !strings.Contains(st.LastError, "locked") {
		t.Errorf("Stats = %+v", st)
	}
}

// Records that can never be applied are set aside with a reason; the records behind them are
// applied in the same batch.
func TestPermanentSetAside(t *testing.T) {
	sink := &processortest.Sink{Reject: func(it *processor.Item) string {
		if it.Record.ID == "conflict" {
			return "thing conflict exists with type meter"
		}
		return ""
	}}
	reg := prometheus.NewRegistry()
	p := newProcessor(t, processor.Config{}, sink, reg)
	bad := rec("a", 2, `{}`)
	bad.ContentFormat = 41
	noCF := rec("a", 4, `{"v":9}`)
	noCF.ContentFormat = record.NoContentFormat
	es := processortest.Inputs(
		rec("a", 1, `{"v":1}`),
		rec("a", 2, `[1,2]`),
		rec("a", 2, `{"v":`),
		bad,
		processortest.Rec("gw1", "bad type!", "a", at(2), `{"v":1}`),
		processortest.Rec("gw1", "sensor", strings.Repeat("x", 129), at(2), `{"v":1}`),
		rec("a", 2, `{"big":"`+strings.Repeat("x", 8200)+`"}`),
		rec("conflict", 2, `{"v":1}`),
		rec("a", 3, `{"v":3}`),
		noCF,
	)
	es = append(es, spoolsource.Decode([]spool.Entry{{Seq: 99, Data: []byte{7, 1, 2}}})...) // not a record at all
	out, err := p.Process(t.Context(), es)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		res    processor.Result
		reason string
	}{
		{processor.Applied, ""},
		{processor.SetAside, "must be a JSON object"},
		{processor.SetAside, "invalid JSON"},
		{processor.SetAside, "content format 41 not supported"},
		{processor.SetAside, "thing type name"},
		{processor.SetAside, "thing name"},
		{processor.SetAside, "over the 8192-byte limit"},
		{processor.SetAside, "exists with type meter"},
		{processor.Applied, ""},
		{processor.Applied, ""},
		{processor.SetAside, "undecodable record"},
	}
	for i, w := range want {
		if out[i].Result != w.res || !strings.Contains(out[i].Reason, w.reason) {
			t.Errorf("record %d: %v %q, want %v with %q", i, out[i].Result, out[i].Reason, w.res, w.reason)
		}
	}
	if got := sink.State("a"); got != `{"v":9}` {
		t.Errorf("state %s, want the last applied record's", got)
	}
	if got := metricValue(t, reg, "coapgw_processor_records_total", "set_aside"); got != 8 {
		t.Errorf("set_aside = %v, want 8", got)
	}
	if got := metricValue(t, reg, "coapgw_processor_records_total", "applied"); got != 3 {
		t.Errorf("applied = %v, want 3", got)
	}
}

func TestDuplicatesCounted(t *testing.T) {
	sink := &processortest.Sink{}
	reg := prometheus.NewRegistry()
	p := newProcessor(t, processor.Config{}, sink, reg)
	es := processortest.Inputs(rec("a", 1, `{"v":1}`), rec("a", 2, `{"v":2}`))
	for range 2 {
		if _, err := p.Process(t.Context(), es); err != nil {
			t.Fatal(err)
		}
	}
	if got := metricValue(t, reg, "coapgw_processor_records_total", "duplicate"); got != 2 {
		t.Errorf("duplicate = %v, want 2", got)
	}
	if sink.Count("a") != 2 {
		t.Errorf("applied %d records of a, want 2", sink.Count("a"))
	}
}

// applyAll is a sink that reports every valid record Applied, as a sink comparing each record
// with the state before the batch does when one record comes twice in a batch.
type applyAll struct{}

func (applyAll) Apply(_ context.Context, b *processor.Batch) ([]processor.Outcome, error) {
	out := make([]processor.Outcome, len(b.Items))
	for i, it := range b.Items {
		out[i] = processor.Outcome{Result: processor.Applied}
		if it.Err != nil {
			out[i] = processor.Outcome{Result: processor.SetAside, Reason: it.Err.Error()}
		}
	}
	return out, nil
}

// One record twice in a batch (as SQS can hand over: a gateway resent it after a crash) is
// applied once and counted once; the second copy is a duplicate whatever the sink said.
func TestRepeatInBatchIsDuplicate(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := newProcessor(t, processor.Config{}, applyAll{}, reg)
	a1, b1, a2 := rec("a", 1, `{"v":1}`), rec("b", 2, `{"v":2}`), rec("a", 3, `{"v":3}`)
	a1.Seq, b1.Seq, a2.Seq = 7, 8, 9
	other := a1
	other.GW = "gw-other" // the same seq from another gateway is another record
	out, err := p.Process(t.Context(), processortest.Inputs(a1, b1, a1, a2, other, b1))
	if err != nil {
		t.Fatal(err)
	}
	want := []processor.Result{processor.Applied, processor.Applied, processor.Duplicate, processor.Applied, processor.Applied, processor.Duplicate}
	for i, o := range out {
		if o.Result != want[i] {
			t.Fatalf("outcome %d = %v, want %v (all: %v)", i, o.Result, want[i], out)
		}
	}
	if got := metricValue(t, reg, "coapgw_processor_records_total", "applied"); got != 4 {
		t.Errorf("applied = %v, want 4", got)
	}
	if got := metricValue(t, reg, "coapgw_processor_records_total", "duplicate"); got != 2 {
		t.Errorf("duplicate = %v, want 2", got)
	}
	// Rising sequence numbers of one gateway (the spool): nothing to mark.
	out, err = p.Process(t.Context(), processortest.Inputs(rec("c", 1, `{"v":1}`), rec("c", 2, `{"v":2}`)))
	if err != nil || out[0].Result != processor.Applied || out[1].Result != processor.Applied {
		t.Fatalf("rising batch: %v %v", out, err)
	}
}

// Stopping Run while the sink is working abandons the batch: nothing is committed, Run returns,
// no goroutine is left (goleak in TestMain).
func TestGracefulStop(t *testing.T) {
	sp := spool.NewMemory(spool.Options{})
	defer sp.Close()
	fill(t, sp, rec("a", 1, `{"v":1}`))
	started := make(chan struct{})
	sink := &processortest.Sink{Fail: func(ctx context.Context, call int) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}}
	p := newProcessor(t, processor.Config{}, sink, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, spoolsource.New(sp)) }()
	<-started
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if c := sp.Stats().CommittedSeq; c != 0 {
		t.Errorf("abandoned batch committed to %d", c)
	}
	if len(sink.Batches()) != 0 {
		t.Error("the sink reports an applied batch")
	}
}

func TestRunReturnsWhenSourceCloses(t *testing.T) {
	sp := spool.NewMemory(spool.Options{})
	p := newProcessor(t, processor.Config{}, &processortest.Sink{}, nil)
	done := make(chan error, 1)
	go func() { done <- p.Run(t.Context(), spoolsource.New(sp)) }()
	sp.Close()
	select {
	case err := <-done:
		if !errors.Is(err, spool.ErrClosed) {
			t.Errorf("Run = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return when the spool closed")
	}
}

// Lag: now − received_at of the oldest record being applied; 0 once idle and caught up.
func TestLag(t *testing.T) {
	var mu sync.Mutex
	now := at(100)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	sp := spool.NewMemory(spool.Options{})
	defer sp.Close()
	last := fill(t, sp, rec("a", 90, `{"v":1}`), rec("a", 95, `{"v":2}`))
	inSink := make(chan time.Duration, 1)
	var p *processor.Processor
	sink := &processortest.Sink{Fail: func(ctx context.Context, call int) error {
		inSink <- p.Lag()
		return nil
	}}
	reg := prometheus.NewRegistry()
	p = newProcessor(t, processor.Config{Now: clock}, sink, reg)
	if p.Lag() != 0 {
		t.Errorf("lag before anything = %v", p.Lag())
	}
	if err := runUntil(t, p, spoolsource.New(sp), func() bool { return sp.Stats().CommittedSeq == last }); err != nil {
		t.Fatal(err)
	}
	if got := <-inSink; got != 10*time.Second {
		t.Errorf("lag while applying = %v, want 10s (now − oldest record in the batch)", got)
	}
	if p.Lag() != 0 {
		t.Errorf("lag when caught up = %v, want 0", p.Lag())
	}
	if got := metricValue(t, reg, "coapgw_processor_lag_seconds", ""); got != 0 {
		t.Errorf("lag gauge = %v", got)
	}
}

func TestOnApplied(t *testing.T) {
	var got []string
	p := newProcessor(t, processor.Config{OnApplied: func(things []string) { got = append(got, things...) }}, &processortest.Sink{}, nil)
	es := processortest.Inputs(rec("a", 1, `{"v":1}`), rec("b", 1, `[]`), rec("c", 1, `{"v":1}`))
	if _, err := p.Process(t.Context(), es); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("OnApplied got %v, want [a c]", got)
	}
}

// stepSource hands out one batch, then blocks in Next until ctx ends; Depth says how many records
// it still holds.
type stepSource struct {
	mu        sync.Mutex
	batch     []processor.Input
	committed uint64
}

func (s *stepSource) Next(ctx context.Context, max int) ([]processor.Input, error) {
	s.mu.Lock()
	b := s.batch
	s.batch = nil
	s.mu.Unlock()
	if b != nil {
		return b, nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (s *stepSource) Commit(seq uint64) error {
	s.mu.Lock()
	s.committed = seq
	s.mu.Unlock()
	return nil
}

func (s *stepSource) lastCommit() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.committed
}

type depthSource struct {
	*stepSource
	depth int64
}

func (s depthSource) Depth() int64 { return s.depth }

// Between batches, the lag is now − received_at of the newest record applied while the source
// (through Depth) still holds records, and 0 once it holds none or cannot tell.
func TestLagBetweenBatches(t *testing.T) {
	now := at(100)
	for _, tc := range []struct {
		name string
		src  func(*stepSource) processor.Source
		want time.Duration
	}{
		{"records left", func(s *stepSource) processor.Source { return depthSource{s, 7} }, 5 * time.Second},
		{"caught up", func(s *stepSource) processor.Source { return depthSource{s, 0} }, 0},
		{"no depth", func(s *stepSource) processor.Source { return s }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newProcessor(t, processor.Config{Now: func() time.Time { return now }}, &processortest.Sink{}, nil)
			s := &stepSource{batch: processortest.Inputs(rec("a", 90, `{"v":1}`), rec("a", 95, `{"v":2}`))}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx, tc.src(s)) }()
			for s.lastCommit() != 2 {
				time.Sleep(time.Millisecond)
			}
			got := p.Lag()
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("lag between batches = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSetAsideLoggedPerBatch: a batch with many records set aside logs one INFO line naming
// how many and the first one, not a line per record (4,061 lines for a bench run once).
func TestSetAsideLoggedPerBatch(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	p, err := processor.New(processor.Config{}, &processortest.Sink{}, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	var recs []record.Record
	for i := range 100 {
		recs = append(recs, rec("a", float64(i), `[1]`))
	}
	out, err := p.Process(t.Context(), processortest.Inputs(recs...))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 100 || out[99].Result != processor.SetAside {
		t.Fatalf("outcomes %v", out)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "records set aside") || !strings.Contains(lines[0], "records=100") ||
		!strings.Contains(lines[0], "first_seq=1 ") || !strings.Contains(lines[0], "must be a JSON object") {
		t.Fatalf("log:\n%s\nwant one line for the batch", buf.String())
	}
}
