package spool

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppend measures the cost of Append itself on the caller's goroutine (NoSync, one
// appender): ns/op and allocs/op per append. Every 64k appends the timer stops while the queue is
// flushed and everything committed, so the figure is Append's CPU cost, not disk bandwidth.
func BenchmarkAppend(b *testing.B) {
	for _, im := range []struct {
		name string
		open func(b *testing.B) Log
	}{
		{"Disk", func(b *testing.B) Log {
			d, err := Open(b.TempDir(), Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			return d
		}},
		{"Memory", func(b *testing.B) Log { return NewMemory(Options{}) }},
	} {
		b.Run(im.name, func(b *testing.B) {
			l := im.open(b)
			defer l.Close()
			data := make([]byte, 200)
			var acked, lastSeq atomic.Uint64
			done := func(seq uint64, err error) {
				if err != nil {
					b.Error(err)
				}
				lastSeq.Store(seq)
				acked.Add(1)
			}
			var appended uint64
			drain := func() {
				b.StopTimer()
				for acked.Load() < appended {
					time.Sleep(100 * time.Microsecond)
				}
				if err := l.Commit(lastSeq.Load()); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := l.Append(data, done); err != nil {
					b.Fatal(err)
				}
				if appended++; appended%(1<<16) == 0 {
					drain()
				}
			}
			drain()
		})
	}
}

// BenchmarkAppendFsync measures durable throughput with real fsync: 512 concurrent appenders, each
// waiting for its acknowledgement before the next append, as devices waiting for their 2.04 do.
// It reports acknowledged records/s and records per fsync (the group-commit batch size).
func BenchmarkAppendFsync(b *testing.B) {
	d, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	const appenders = 512
	data := make([]byte, 200)
	work := make(chan struct{}, appenders)
	var wg sync.WaitGroup
	b.ReportAllocs()
	syncs0 := d.syncs.Load()
	start := time.Now()
	b.ResetTimer()
	for range appenders {
		wg.Go(func() {
			ack := make(chan error, 1)
			done := func(_ uint64, err error) { ack <- err }
			for range work {
				if err := d.Append(data, done); err != nil {
					b.Error(err)
					return
				}
				if err := <-ack; err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	b.StopTimer()
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(b.N)/float64(max(d.syncs.Load()-syncs0, 1)), "records/fsync")
}
