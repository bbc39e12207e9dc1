package processor_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processor/spoolsource"
	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/record"
	"github.com/coapgw/coapgw/internal/registry"
	"github.com/coapgw/coapgw/internal/spool"
)

const benchThings = 10_000

// benchRecords returns n records spread round-robin over benchThings things of 4 types, each a
// typical sensor payload (3 numbers, a string) with values that change every record, received
// 10 µs apart from start, encoded as the spool holds them, numbered from seq.
func benchRecords(b testing.TB, n int, seq uint64, start time.Time) []spool.Entry {
	return benchRecordsFormat(b, n, seq, start, record.FormatJSON)
}

// benchRecordsFormat is benchRecords with the payloads in another format (the same readings):
// CBOR as a device encodes it (floats at the shortest exact width), SenML with relative times 0
// (the time the gateway received it).
func benchRecordsFormat(b testing.TB, n int, seq uint64, start time.Time, format uint16) []spool.Entry {
	em, err := cbor.EncOptions{ShortestFloat: cbor.ShortestFloat16, Sort: cbor.SortCanonical}.EncMode()
	if err != nil {
		b.Fatal(err)
	}
	es := make([]spool.Entry, n)
	for i := range es {
		k := int(seq) + i
		temp, hum, bat := float64(15+k%20)+float64(k%10)/10, 30+k%50, 3+float64(k%100)/100
		var payload []byte
		switch format {
		case record.FormatJSON:
			payload = fmt.Appendf(nil, `{"temp":%d.%d,"hum":%d,"bat":3.%02d,"fw":"1.4.2"}`, 15+k%20, k%10, 30+k%50, k%100)
		case record.FormatCBOR:
			payload, err = em.Marshal(map[string]any{"temp": temp, "hum": hum, "bat": bat, "fw": "1.4.2"})
		case record.FormatSenMLJSON:
			payload = fmt.Appendf(nil, `[{"n":"temp","v":%d.%d},{"n":"hum","v":%d},{"n":"bat","v":3.%02d},{"n":"fw","vs":"1.4.2"}]`, 15+k%20, k%10, 30+k%50, k%100)
		case record.FormatSenMLCBOR:
			payload, err = em.Marshal([]map[int]any{{0: "temp", 2: temp}, {0: "hum", 2: hum}, {0: "bat", 2: bat}, {0: "fw", 3: "1.4.2"}})
		}
		if err != nil {
			b.Fatal(err)
		}
		r := processortest.Rec("gw1", fmt.Sprintf("sensor-%d", k%4), fmt.Sprintf("dev-%05d", k%benchThings),
			start.Add(time.Duration(k)*10*time.Microsecond), string(payload))
		r.ContentFormat = format
		es[i] = processortest.Entry(b, seq+uint64(i), r)
	}
	return es
}

// BenchmarkProcessRegistryFormats is BenchmarkProcessRegistry with the same readings in each
// format, side by side: the figure is each format's records/s against json's.
func BenchmarkProcessRegistryFormats(b *testing.B) {
	for _, f := range []struct {
		name string
		cf   uint16
	}{{"json", record.FormatJSON}, {"cbor", record.FormatCBOR}, {"senml-json", record.FormatSenMLJSON}, {"senml-cbor", record.FormatSenMLCBOR}} {
		b.Run(f.name, func(b *testing.B) { benchProcessRegistry(b, f.cf) })
	}
}

func openBenchRegistry(b *testing.B) *registry.Registry {
	reg, err := registry.Open(filepath.Join(b.TempDir(), "registry.db"), registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { reg.Close() })
	return reg
}

// BenchmarkProcessRegistry measures end-to-end throughput of the processor core into the SQLite
// registry (fsync per batch, synchronous=FULL): batches of 20,000 pre-encoded records (decoded
// in the loop, as the spool source does) over 10,000 things that already exist, so every record
// is a shadow update, a message count and three history points. One op is one record; records/s is the figure, last-quarter-records/s the
// steady state.
func BenchmarkProcessRegistry(b *testing.B) { benchProcessRegistry(b, record.FormatJSON) }

func benchProcessRegistry(b *testing.B, format uint16) {
	reg := openBenchRegistry(b)
	p, err := processor.New(processor.Config{}, reg, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	start := time.Now().Add(-time.Hour)
	// Create the things first: steady state is updates.
	for s := uint64(1); s <= benchThings; s += 5000 {
		if _, err := p.Process(ctx, spoolsource.Decode(benchRecords(b, 5000, s, start))); err != nil {
			b.Fatal(err)
		}
	}
	const batch = 20000 // the default BatchSize: what Run takes when the spool holds a backlog
	n := max(b.N, batch)
	es := benchRecordsFormat(b, n, benchThings+1, start, format)
	b.ResetTimer()
	cpu0 := processortest.ProcessCPU()
	t0 := time.Now()
	var t3q time.Time // when the last quarter started
	q3 := len(es) / batch * 3 / 4 * batch
	for i := 0; i < len(es); i += batch {
		if i == q3 {
			t3q = time.Now()
		}
		out, err := p.Process(ctx, spoolsource.Decode(es[i:min(i+batch, len(es))])) // as Run's source does
		if err != nil {
			b.Fatal(err)
		}
		if out[0].Result != processor.Applied {
			b.Fatalf("outcome %+v", out[0])
		}
	}
	el := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(n)/el.Seconds(), "records/s")
	// CPU time of the process (every thread: GC and SQLite included) per record: unlike
	// records/s, it does not grow while other processes hold the cores or the disk.
	b.ReportMetric(float64(processortest.ProcessCPU()-cpu0)/float64(n), "cpu-ns/record")
	// The rate over the last quarter: with a long run (10,000,000x), the steady state, each
	// thing's history full and trimmed, the tables at their working size.
	b.ReportMetric(float64(n-q3)/time.Since(t3q).Seconds(), "last-quarter-records/s")
}

// BenchmarkRunMemorySpool is the same through the local driver: the records are in a memory
// spool (appended before the clock starts), and Run consumes it (Next → decode one batch ahead →
// apply → Commit) until it is drained.
func BenchmarkRunMemorySpool(b *testing.B) {
	reg := openBenchRegistry(b)
	sp := spool.NewMemory(spool.Options{MaxBytes: 4 << 30})
	defer sp.Close()
	p, err := processor.New(processor.Config{}, reg, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now().Add(-time.Hour)
	n := max(b.N, 5000)
	recs := benchRecords(b, benchThings+n, 1, start)
	drain := func(es []spool.Entry) time.Duration {
		for _, e := range es {
			if err := sp.Append(e.Data, nil); err != nil {
				b.Fatal(err)
			}
		}
		last := es[len(es)-1].Seq
		for sp.Stats().NextSeq <= last { // appended and visible
			time.Sleep(time.Millisecond)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		t0 := time.Now()
		go func() { done <- p.Run(ctx, spoolsource.New(sp)) }()
		for sp.Stats().CommittedSeq < last {
			time.Sleep(200 * time.Microsecond)
		}
		el := time.Since(t0)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		return el
	}
	drain(recs[:benchThings]) // create the things
	b.ResetTimer()
	el := drain(recs[benchThings:])
	b.StopTimer()
	if got := p.Stats().Applied; got != int64(len(recs)) {
		b.Fatalf("applied %d of %d", got, len(recs))
	}
	b.ReportMetric(float64(n)/el.Seconds(), "records/s")
}

// BenchmarkLagSteadyFeed feeds a memory spool at a steady rate (records stamped with the time they
// are appended, as ingest does) for 15 s while Run applies them to the SQLite registry, sampling
// Lag() every 10 ms; it reports the median and maximum lag and the records/s applied. At a rate
// above the processor's throughput the lag grows for as long as the feed lasts.
func BenchmarkLagSteadyFeed(b *testing.B) {
	for _, rate := range []int{20_000, 50_000, 100_000, 120_000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			for b.Loop() {
				lagRun(b, rate, 15*time.Second)
			}
		})
	}
}

func lagRun(b *testing.B, rate int, feed time.Duration) {
	reg := openBenchRegistry(b)
	sp := spool.NewMemory(spool.Options{MaxBytes: 4 << 30})
	defer sp.Close()
	p, err := processor.New(processor.Config{}, reg, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, spoolsource.New(sp)) }()
	var lags []time.Duration
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tk.C:
				lags = append(lags, p.Lag())
			}
		}
	}()
	start := time.Now()
	var sent uint64
	tick := time.NewTicker(time.Millisecond)
	for now := range tick.C {
		el := now.Sub(start)
		if el >= feed {
			break
		}
		for due := uint64(el.Seconds() * float64(rate)); sent < due; sent++ {
			k := int(sent)
			r := processortest.Rec("gw1", "sensor", fmt.Sprintf("dev-%05d", k%benchThings), time.Now(),
				fmt.Sprintf(`{"temp":%d.%d,"hum":%d,"bat":3.%d,"fw":"1.4.2"}`, 15+k%20, k%10, 30+k%50, k%100))
			e := processortest.Entry(b, 0, r)
			if err := sp.Append(e.Data, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	tick.Stop()
	fed := time.Since(start)
	for sp.Stats().CommittedSeq < sent {
		time.Sleep(time.Millisecond)
	}
	drained := time.Since(start)
	close(stopSampling)
	<-sampled
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	slices.Sort(lags)
	b.ReportMetric(lags[len(lags)/2].Seconds(), "p50-lag-s")
	b.ReportMetric(lags[len(lags)-1].Seconds(), "max-lag-s")
	b.ReportMetric(float64(sent)/fed.Seconds(), "fed/s")
	b.ReportMetric(float64(sent)/drained.Seconds(), "applied/s")
}
