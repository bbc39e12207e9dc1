package spool

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// opener makes a fresh, empty Log that is closed when the test ends.
type opener func(t *testing.T, opts Options) Log

var impls = []struct {
	name string
	open opener
}{
	{"Disk", func(t *testing.T, opts Options) Log { return openT(t, t.TempDir(), opts) }},
	{"Memory", func(t *testing.T, opts Options) Log {
		l := NewMemory(opts)
		t.Cleanup(func() { l.Close() })
		return l
	}},
}

// TestConformance runs the Log contract against every implementation.
func TestConformance(t *testing.T) {
	tests := []struct {
		name string
		fn   func(*testing.T, opener)
	}{
		{"AppendAckOrder", testAppendAckOrder},
		{"ConcurrentCallbacksExactlyOnce", testConcurrentCallbacksExactlyOnce},
		{"AppendCopiesData", testAppendCopiesData},
		{"EmptyEntry", testEmptyEntry},
		{"TooLarge", testTooLarge},
		{"NextMax", testNextMax},
		{"NextBlocksUntilAppend", testNextBlocksUntilAppend},
		{"NextContextCancel", testNextContextCancel},
		{"CommitSemantics", testCommitSemantics},
		{"CommitAheadOfNext", testCommitAheadOfNext},
		{"FullAndRecovery", testFullAndRecovery},
		{"CloseFlushes", testCloseFlushes},
		{"ClosedErrors", testClosedErrors},
		{"CloseUnblocksNext", testCloseUnblocksNext},
	}
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) { tc.fn(t, im.open) })
			}
		})
	}
}

func testAppendAckOrder(t *testing.T, open opener) {
	l := open(t, Options{})
	datas := entries("order", 1000, 40)
	var mu sync.Mutex
	var order []int // append index, in callback order
	var seqs []uint64
	var wg sync.WaitGroup
	for i, d := range datas {
		wg.Add(1)
		if err := l.Append(d, func(seq uint64, err error) {
			if err != nil {
				t.Errorf("append %d: %v", i, err)
			}
			mu.Lock()
			order = append(order, i)
			seqs = append(seqs, seq)
			mu.Unlock()
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitWG(t, &wg)
	for k := range order {
		if order[k] != k {
			t.Fatalf("callback %d is for append %d", k, order[k])
		}
		if k > 0 && seqs[k] <= seqs[k-1] {
			t.Fatalf("callback %d: seq %d after %d", k, seqs[k], seqs[k-1])
		}
	}
	checkEntries(t, readN(t, l, len(datas)), seqMap(seqs, datas))
	readNone(t, l)
	if st := l.Stats(); st.Depth != int64(len(datas)) || st.NextSeq != seqs[len(seqs)-1]+1 {
		t.Fatalf("Stats = %+v; want depth %d, next seq %d", st, len(datas), seqs[len(seqs)-1]+1)
	}
}

func testConcurrentCallbacksExactlyOnce(t *testing.T, open opener) {
	l := open(t, Options{})
	const writers, per = 8, 500
	var mu sync.Mutex
	calls := map[uint64]int{}
	want := map[uint64][]byte{}
	var wg sync.WaitGroup
	wg.Add(writers * per)
	for w := range writers {
		datas := entries(string(rune('A'+w)), per, 64)
		go func() {
			for _, d := range datas {
				if err := l.Append(d, func(seq uint64, err error) {
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						t.Errorf("append: %v", err)
					}
					calls[seq]++
					want[seq] = d
					wg.Done()
				}); err != nil {
					t.Errorf("Append: %v", err)
					wg.Done()
				}
			}
		}()
	}
	waitWG(t, &wg)
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != writers*per {
		t.Fatalf("%d distinct seqs acknowledged, want %d", len(calls), writers*per)
	}
	for seq, n := range calls {
		if n != 1 {
			t.Fatalf("seq %d: callback called %d times", seq, n)
		}
	}
	checkEntries(t, readN(t, l, writers*per), want)
}

func testAppendCopiesData(t *testing.T, open opener) {
	l := open(t, Options{})
	buf := []byte("original")
	var wg sync.WaitGroup
	wg.Add(1)
	if err := l.Append(buf, func(uint64, error) { wg.Done() }); err != nil {
		t.Fatal(err)
	}
	copy(buf, "XXXXXXXX")
	waitWG(t, &wg)
	es := readN(t, l, 1)
	if string(es[0].Data) != "original" {
		t.Fatalf("Data = %q; the spool kept the caller's buffer", es[0].Data)
	}
}

func testEmptyEntry(t *testing.T, open opener) {
	l := open(t, Options{})
	rs := appendAll(t, l, [][]byte{nil, []byte("x"), {}})
	seqs := okSeqs(t, rs)
	checkEntries(t, readN(t, l, 3), map[uint64][]byte{seqs[0]: nil, seqs[1]: []byte("x"), seqs[2]: nil})
}

func testTooLarge(t *testing.T, open opener) {
	l := open(t, Options{MaxBytes: 64 << 20})
	called := false
	err := l.Append(make([]byte, MaxEntryBytes+1), func(uint64, error) { called = true })
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append(16 MiB + 1) = %v, want ErrTooLarge", err)
	}
	r := appendWait(t, l, make([]byte, MaxEntryBytes))
	if r.err != nil {
		t.Fatalf("Append(16 MiB) = %v", r.err)
	}
	if es := readN(t, l, 1); len(es[0].Data) != MaxEntryBytes || called {
		t.Fatalf("got %d bytes, refused callback called: %v", len(es[0].Data), called)
	}
}

func testNextMax(t *testing.T, open opener) {
	l := open(t, Options{})
	datas := entries("max", 10, 20)
	seqs := okSeqs(t, appendAll(t, l, datas))
	var got []Entry
	for _, n := range []int{3, 3, 3, 1} {
		es, err := l.Next(t.Context(), 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != n {
			t.Fatalf("Next(3) = %d entries, want %d", len(es), n)
		}
		got = append(got, es...)
	}
	checkEntries(t, got, seqMap(seqs, datas))
	readNone(t, l)
}

func testNextBlocksUntilAppend(t *testing.T, open opener) {
	l := open(t, Options{})
	type res struct {
		es  []Entry
		err error
	}
	ch := make(chan res, 1)
	go func() {
		es, err := l.Next(t.Context(), 10)
		ch <- res{es, err}
	}()
	select {
	case r := <-ch:
		t.Fatalf("Next returned %v, %v on an empty spool", r.es, r.err)
	case <-time.After(50 * time.Millisecond):
	}
	r := appendWait(t, l, []byte("wake"))
	select {
	case got := <-ch:
		if got.err != nil || len(got.es) != 1 || got.es[0].Seq != r.seq || string(got.es[0].Data) != "wake" {
			t.Fatalf("Next = %+v, %v; want seq %d", got.es, got.err, r.seq)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Next did not wake up")
	}
}

func testNextContextCancel(t *testing.T, open opener) {
	l := open(t, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	ch := make(chan error, 1)
	go func() {
		_, err := l.Next(ctx, 1)
		ch <- err
	}()
	time.Sleep(10 * time.Millisecond)
	cancel()
	select {
	case err := <-ch:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Next = %v, want context.Canceled", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Next ignored cancellation")
	}
	// An entry that arrived meanwhile is still there for the next call.
	r := appendWait(t, l, []byte("after"))
	if es := readN(t, l, 1); es[0].Seq != r.seq {
		t.Fatalf("Next = seq %d, want %d", es[0].Seq, r.seq)
	}
}

func testCommitSemantics(t *testing.T, open opener) {
	l := open(t, Options{})
	datas := entries("commit", 10, 20)
	seqs := okSeqs(t, appendAll(t, l, datas))
	readN(t, l, 10)
	if err := l.Commit(seqs[4]); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.CommittedSeq != seqs[4] || st.Depth != 5 {
		t.Fatalf("after Commit(%d): %+v; want committed %d, depth 5", seqs[4], st, seqs[4])
	}
	if err := l.Commit(seqs[2]); err != nil {
		t.Fatalf("Commit below the cursor = %v, want no-op", err)
	}
	if st := l.Stats(); st.CommittedSeq != seqs[4] || st.Depth != 5 {
		t.Fatalf("Commit below the cursor moved it: %+v", st)
	}
	if err := l.Commit(seqs[9] + 1); err == nil {
		t.Fatal("Commit beyond the last durable entry succeeded")
	}
	if st := l.Stats(); st.CommittedSeq != seqs[4] {
		t.Fatalf("failed Commit moved the cursor: %+v", st)
	}
	if err := l.Commit(seqs[9]); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.CommittedSeq != seqs[9] || st.Depth != 0 {
		t.Fatalf("after committing everything: %+v", st)
	}
	readNone(t, l)
}

func testCommitAheadOfNext(t *testing.T, open opener) {
	l := open(t, Options{})
	datas := entries("ahead", 10, 20)
	seqs := okSeqs(t, appendAll(t, l, datas))
	checkEntries(t, readN(t, l, 2), seqMap(seqs[:2], datas[:2]))
	if err := l.Commit(seqs[5]); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Depth != 4 {
		t.Fatalf("Depth = %d after committing 6 of 10, want 4", st.Depth)
	}
	// Entries delivered by the Commit are not returned again.
	checkEntries(t, readN(t, l, 4), seqMap(seqs[6:], datas[6:]))
	readNone(t, l)
}

func testFullAndRecovery(t *testing.T, open opener) {
	const maxBytes = 4096
	const size = 100 // frame: 116 bytes
	l := open(t, Options{MaxBytes: maxBytes})
	datas := entries("full", 100, size)
	var accepted [][]byte
	var full bool
	var wg sync.WaitGroup
	for _, d := range datas {
		wg.Add(1)
		err := l.Append(d, func(_ uint64, err error) {
			if err != nil {
				t.Errorf("accepted append failed: %v", err)
			}
			wg.Done()
		})
		if errors.Is(err, ErrFull) {
			wg.Done() // done is not called for a refused append; the wait below checks that
			full = true
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted = append(accepted, d)
	}
	waitWG(t, &wg)
	if want := maxBytes / (frameHeaderSize + size); !full || len(accepted) != want {
		t.Fatalf("accepted %d entries before ErrFull (full=%v), want %d", len(accepted), full, want)
	}
	if err := l.Append(datas[0], func(uint64, error) { t.Error("callback of a refused append") }); !errors.Is(err, ErrFull) {
		t.Fatalf("Append when full = %v, want ErrFull", err)
	}
	before := l.Stats().Bytes
	es := readN(t, l, len(accepted))
	if err := l.Commit(es[len(es)-1].Seq); err != nil {
		t.Fatal(err)
	}
	if after := l.Stats().Bytes; after >= before {
		t.Fatalf("Commit freed nothing: %d bytes before, %d after", before, after)
	}
	// Space is back: at least a quarter of the cap can be appended again.
	rs := appendAll(t, l, entries("again", maxBytes/4/(frameHeaderSize+size), size))
	okSeqs(t, rs)
}

func testCloseFlushes(t *testing.T, open opener) {
	l := open(t, Options{})
	const n = 500
	var mu sync.Mutex
	calls := 0
	for _, d := range entries("close", n, 30) {
		if err := l.Append(d, func(_ uint64, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("append: %v", err)
			}
			calls++
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != n {
		t.Fatalf("%d of %d callbacks called when Close returned", calls, n)
	}
}

func testClosedErrors(t *testing.T, open opener) {
	l := open(t, Options{})
	r := appendWait(t, l, []byte("x"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Append([]byte("y"), func(uint64, error) { t.Error("callback after Close") }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v", err)
	}
	if _, err := l.Next(t.Context(), 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close = %v", err)
	}
	if err := l.Commit(r.seq); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close = %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

func testCloseUnblocksNext(t *testing.T, open opener) {
	l := open(t, Options{})
	ch := make(chan error, 1)
	go func() {
		_, err := l.Next(context.Background(), 1)
		ch <- err
	}()
	time.Sleep(10 * time.Millisecond)
	l.Close()
	select {
	case err := <-ch:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Next = %v, want ErrClosed", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Close did not unblock Next")
	}
}
