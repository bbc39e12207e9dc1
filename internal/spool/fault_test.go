package spool

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	errEROFS  = syscall.EROFS
	errEACCES = syscall.EACCES
)

// failedBatch appends datas while a fault is active and checks that every callback reports an error
// wrapping ErrUnavailable and one of causes (if any); it returns the sequence numbers they carried.
func failedBatch(t *testing.T, d *Disk, datas [][]byte, causes ...error) []uint64 {
	t.Helper()
	var seqs []uint64
	for i, r := range appendAll(t, d, datas) {
		ok := errors.Is(r.err, ErrUnavailable) && len(causes) == 0
		for _, c := range causes {
			ok = ok || errors.Is(r.err, ErrUnavailable) && errors.Is(r.err, c)
		}
		if !ok {
			t.Fatalf("append %d during the fault: err = %v; want ErrUnavailable wrapping one of %v", i, r.err, causes)
		}
		seqs = append(seqs, r.seq)
	}
	return seqs
}

// TestDiskFaults injects write, fsync, truncate and create failures and checks the failing-disk
// contract: the batch's callbacks get ErrUnavailable, nothing of the batch is ever returned by Next
// (now or after a restart), its sequence numbers are not reused, and the spool recovers by itself
// once the fault clears.
func TestDiskFaults(t *testing.T) {
	tests := []struct {
		name   string
		fault  func(*faultFS)
		causes []error
		// partial clears part of the fault; the next batch must still fail.
		partial func(*faultFS)
	}{
		{name: "ENOSPC on write", fault: func(f *faultFS) { f.writeErr = errENOSPC }, causes: []error{errENOSPC}},
		{name: "EIO on fsync", fault: func(f *faultFS) { f.syncErr = errEIO }, causes: []error{errEIO}},
		{
			name:    "write fails and so does the truncation",
			fault:   func(f *faultFS) { f.writeErr, f.truncErr = errENOSPC, errEIO },
			causes:  []error{errENOSPC, errEIO}, // later batches of the fault fail in the truncation
			partial: func(f *faultFS) { f.writeErr = nil },
		},
		{
			name:    "fsync fails and so does the fsync after truncation",
			fault:   func(f *faultFS) { f.syncErr = errEIO },
			causes:  []error{errEIO},
			partial: func(f *faultFS) {}, // still failing
		},
		{
			name:   "new segment cannot be created",
			fault:  func(f *faultFS) { f.createErr = errENOSPC },
			causes: []error{errENOSPC},
		},
		{
			// The filesystem was remounted read-only (ext4 errors=remount-ro): every write, fsync,
			// truncation and file creation fails with EROFS, so the failed batch cannot even be
			// truncated away until the fault clears; a second batch during the fault fails too.
			name: "read-only filesystem (EROFS)",
			fault: func(f *faultFS) {
				f.writeErr, f.syncErr, f.truncErr, f.createErr = errEROFS, errEROFS, errEROFS, errEROFS
			},
			causes:  []error{errEROFS},
			partial: func(f *faultFS) {}, // still read-only
		},
		{
			// Permissions taken away (EACCES): writes and new files (segments, the cursor) fail,
			// while truncating the open segment still works.
			name:   "permission denied (EACCES)",
			fault:  func(f *faultFS) { f.writeErr, f.createErr = errEACCES, errEACCES },
			causes: []error{errEACCES},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// 600-byte segments: every other 116-byte batch rolls to a new segment while the fault
			// is active, whichever way the writer splits the batches.
			opts := Options{SegmentBytes: 600}
			d, ffs := openFault(t, dir, opts)
			good := entries("good", 5, 100)
			want := seqMap(okSeqs(t, appendAll(t, d, good)), good)
			checkEntries(t, readN(t, d, 5), want)

			ffs.set(tc.fault)
			failed := failedBatch(t, d, entries("lost", 5, 100), tc.causes...)
			if tc.partial != nil {
				ffs.set(tc.partial)
				failed = append(failed, failedBatch(t, d, entries("lost2", 3, 100), tc.causes...)...)
			}
			readNone(t, d)
			if st := d.Stats(); st.Depth != 5 {
				t.Fatalf("Depth = %d during the fault, want 5", st.Depth)
			}

			ffs.set(func(f *faultFS) { f.writeErr, f.syncErr, f.truncErr, f.createErr = nil, nil, nil, nil })
			// Fewer and smaller than the failed entries: if the failed bytes were not truncated, the
			// restart below would find them after these.
			later := entries("later", 2, 20)
			laterSeqs := okSeqs(t, appendAll(t, d, later))
			for _, s := range laterSeqs {
				for _, f := range failed {
					if s <= f {
						t.Fatalf("seq %d after the fault is not above failed seq %d", s, f)
					}
				}
			}
			laterWant := seqMap(laterSeqs, later)
			checkEntries(t, readN(t, d, 2), laterWant)
			readNone(t, d)
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}

			// After a restart the failed entries are still absent and their seqs not reused.
			for s, v := range laterWant {
				want[s] = v
			}
			d2 := openT(t, dir, opts)
			checkEntries(t, readN(t, d2, len(want)), want)
			readNone(t, d2)
			if st := d2.Stats(); st.Corrupt != 0 || st.NextSeq <= failed[len(failed)-1] {
				t.Fatalf("after restart: %+v", st)
			}
		})
	}
}

// TestSeqNotReusedAfterFailedBatchAndRestart: a failed batch at the end of the log (nothing written
// after it) is gone after a restart, and its sequence numbers are not handed out again.
func TestSeqNotReusedAfterFailedBatchAndRestart(t *testing.T) {
	dir := t.TempDir()
	d, ffs := openFault(t, dir, Options{})
	okSeqs(t, appendAll(t, d, entries("a", 3, 10)))
	ffs.set(func(f *faultFS) { f.syncErr = errEIO })
	failed := failedBatch(t, d, entries("b", 3, 10), errEIO)
	ffs.set(func(f *faultFS) { f.syncErr = nil })
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := openT(t, dir, Options{})
	if st := d2.Stats(); st.Depth != 3 || st.Corrupt != 0 {
		t.Fatalf("after restart: %+v; want the 3 good entries only", st)
	}
	readN(t, d2, 3)
	readNone(t, d2)
	r := appendWait(t, d2, []byte("c"))
	if r.err != nil || r.seq <= failed[len(failed)-1] {
		t.Fatalf("append after restart: %+v; want a seq above %d", r, failed[len(failed)-1])
	}
}

// TestCommitCursorFault: a cursor that cannot be written fails Commit with ErrUnavailable and leaves
// the cursor where it was; the same Commit succeeds once the disk recovers.
func TestCommitCursorFault(t *testing.T) {
	dir := t.TempDir()
	d, ffs := openFault(t, dir, Options{})
	seqs := okSeqs(t, appendAll(t, d, entries("c", 10, 10)))
	readN(t, d, 10)
	ffs.set(func(f *faultFS) { f.createErr = errENOSPC })
	if err := d.Commit(seqs[4]); !errors.Is(err, ErrUnavailable) || !errors.Is(err, errENOSPC) {
		t.Fatalf("Commit = %v, want ErrUnavailable wrapping ENOSPC", err)
	}
	if st := d.Stats(); st.CommittedSeq != 0 || st.Depth != 10 {
		t.Fatalf("failed Commit changed the state: %+v", st)
	}
	ffs.set(func(f *faultFS) { f.createErr = nil })
	if err := d.Commit(seqs[4]); err != nil {
		t.Fatal(err)
	}
	if st := d.Stats(); st.CommittedSeq != seqs[4] || st.Depth != 5 {
		t.Fatalf("after Commit: %+v", st)
	}
	d.Close()
	if st := openT(t, dir, Options{}).Stats(); st.CommittedSeq != seqs[4] || st.Depth != 5 {
		t.Fatalf("after restart: %+v", st)
	}
}

// TestNextOnlyDurable: an entry whose fsync has not completed is neither acknowledged nor returned
// by Next.
func TestNextOnlyDurable(t *testing.T) {
	d, ffs := openFault(t, t.TempDir(), Options{})
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	ffs.set(func(f *faultFS) { f.gate, f.entered = gate, entered })
	done := make(chan result, 1)
	if err := d.Append([]byte("slow"), func(seq uint64, err error) { done <- result{seq, err} }); err != nil {
		t.Fatal(err)
	}
	<-entered // the batch is written and its fsync is in progress
	readNone(t, d)
	select {
	case r := <-done:
		t.Fatalf("acknowledged before fsync completed: %+v", r)
	default:
	}
	ffs.set(func(f *faultFS) { f.gate = nil })
	close(gate)
	r := <-done
	if es := readN(t, d, 1); r.err != nil || es[0].Seq != r.seq {
		t.Fatalf("after fsync: %+v, Next = %+v", r, es)
	}
}

// TestGroupCommit: appends that arrive while an fsync is in progress share the next one.
func TestGroupCommit(t *testing.T) {
	d, ffs := openFault(t, t.TempDir(), Options{})
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	ffs.set(func(f *faultFS) { f.gate, f.entered = gate, entered })
	var wg sync.WaitGroup
	wg.Add(1)
	if err := d.Append([]byte("first"), func(uint64, error) { wg.Done() }); err != nil {
		t.Fatal(err)
	}
	<-entered
	syncsBefore := d.syncs.Load()
	const n = 200
	wg.Add(n)
	for _, data := range entries("g", n, 50) {
		if err := d.Append(data, func(_ uint64, err error) {
			if err != nil {
				t.Error(err)
			}
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	ffs.set(func(f *faultFS) { f.gate = nil })
	close(gate)
	waitWG(t, &wg)
	// The lease extension of the first batch also synced the cursor file: count batch fsyncs only.
	if got := d.syncs.Load() - syncsBefore; got != 2 {
		t.Fatalf("%d batch fsyncs for 1 + %d appends (the second batch queued behind the first), want 2", got, n)
	}
	readN(t, d, n+1)
}

// TestSlowFsyncBackpressure: while an fsync takes long, appends queue up to the cap and then get
// ErrFull at once instead of blocking.
func TestSlowFsyncBackpressure(t *testing.T) {
	d, ffs := openFault(t, t.TempDir(), Options{MaxBytes: 64 << 10})
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	ffs.set(func(f *faultFS) { f.gate, f.entered = gate, entered })
	var wg sync.WaitGroup
	wg.Add(1)
	if err := d.Append([]byte("first"), func(uint64, error) { wg.Done() }); err != nil {
		t.Fatal(err)
	}
	<-entered
	start := time.Now()
	accepted := 0
	for _, data := range entries("q", 1000, 1000) {
		wg.Add(1)
		err := d.Append(data, func(uint64, error) { wg.Done() })
		if errors.Is(err, ErrFull) {
			wg.Done()
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted++
	}
	if accepted == 0 || accepted >= 1000 || time.Since(start) > time.Second {
		t.Fatalf("accepted %d appends in %v before ErrFull", accepted, time.Since(start))
	}
	ffs.set(func(f *faultFS) { f.gate = nil })
	close(gate)
	waitWG(t, &wg)
}

// TestBacklogSplitsIntoSegments: a backlog that built up behind a slow fsync is written as several
// batches of at most a segment, so segment files stay near SegmentBytes (Open reads them whole).
func TestBacklogSplitsIntoSegments(t *testing.T) {
	dir := t.TempDir()
	const segBytes = 2 << 20
	d, ffs := openFault(t, dir, Options{SegmentBytes: segBytes})
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	ffs.set(func(f *faultFS) { f.gate, f.entered = gate, entered })
	var wg sync.WaitGroup
	wg.Add(1)
	if err := d.Append([]byte("first"), func(uint64, error) { wg.Done() }); err != nil {
		t.Fatal(err)
	}
	<-entered
	datas := entries("backlog", 10000, 1000) // ~10 MiB queued behind the blocked fsync
	wg.Add(len(datas))
	for _, data := range datas {
		if err := d.Append(data, func(_ uint64, err error) {
			if err != nil {
				t.Error(err)
			}
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	ffs.set(func(f *faultFS) { f.gate = nil })
	close(gate)
	waitWG(t, &wg)
	files := segFiles(t, dir)
	if len(files) < 5 {
		t.Fatalf("%d segments for 10 MiB with 2 MiB segments", len(files))
	}
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil || fi.Size() > segBytes {
			t.Fatalf("segment %s: %d bytes, want at most %d", f, fi.Size(), segBytes)
		}
	}
	readN(t, d, len(datas)+1)
}
