package spool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

const waitTimeout = 20 * time.Second

// result is what a done callback reported.
type result struct {
	seq uint64
	err error
}

// appendWait appends data and waits for its callback.
func appendWait(t testing.TB, l Log, data []byte) result {
	t.Helper()
	rs := appendAll(t, l, [][]byte{data})
	return rs[0]
}

// appendAll appends every entry (failing the test if Append refuses one) and waits for all callbacks,
// failing the test if any is called more than once or not within waitTimeout.
func appendAll(t testing.TB, l Log, datas [][]byte) []result {
	t.Helper()
	rs := make([]result, len(datas))
	calls := make([]int, len(datas))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, d := range datas {
		wg.Add(1)
		err := l.Append(d, func(seq uint64, err error) {
			mu.Lock()
			calls[i]++
			rs[i] = result{seq, err}
			mu.Unlock()
			wg.Done()
		})
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	waitWG(t, &wg)
	mu.Lock()
	defer mu.Unlock()
	for i, c := range calls {
		if c != 1 {
			t.Fatalf("callback of append %d called %d times", i, c)
		}
	}
	return rs
}

func waitWG(t testing.TB, wg *sync.WaitGroup) {
	t.Helper()
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(waitTimeout):
		t.Fatal("callbacks not called in time")
	}
}

// entries makes n distinct entries of size bytes, tagged with prefix.
func entries(prefix string, n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		b := fmt.Appendf(nil, "%s-%06d-", prefix, i)
		for len(b) < size {
			b = append(b, byte('a'+(i+len(b))%26))
		}
		out[i] = b
	}
	return out
}

// okSeqs returns the sequence numbers of rs, failing on any error.
func okSeqs(t testing.TB, rs []result) []uint64 {
	t.Helper()
	seqs := make([]uint64, len(rs))
	for i, r := range rs {
		if r.err != nil {
			t.Fatalf("append %d failed: %v", i, r.err)
		}
		seqs[i] = r.seq
	}
	return seqs
}

// readN reads exactly n entries with Next, failing if they do not arrive in time.
func readN(t testing.TB, l Log, n int) []Entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var out []Entry
	for len(out) < n {
		es, err := l.Next(ctx, n-len(out))
		if err != nil {
			t.Fatalf("Next after %d of %d entries: %v", len(out), n, err)
		}
		out = append(out, es...)
	}
	return out
}

// readNone asserts that Next has nothing to return for a short while.
func readNone(t testing.TB, l Log) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	es, err := l.Next(ctx, 100)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next = %d entries (first %v), %v; want nothing", len(es), firstSeq(es), err)
	}
}

func firstSeq(es []Entry) any {
	if len(es) == 0 {
		return "none"
	}
	return es[0].Seq
}

// checkEntries asserts that got holds exactly the entries want (seq → data), in ascending order.
func checkEntries(t testing.TB, got []Entry, want map[uint64][]byte) {
	t.Helper()
	for i, e := range got {
		if i > 0 && e.Seq <= got[i-1].Seq {
			t.Fatalf("entry %d: seq %d after %d", i, e.Seq, got[i-1].Seq)
		}
		w, ok := want[e.Seq]
		if !ok {
			t.Fatalf("entry %d: unexpected seq %d", i, e.Seq)
		}
		if string(w) != string(e.Data) {
			t.Fatalf("seq %d: data %q, want %q", e.Seq, e.Data, w)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
}

// seqMap pairs seqs with datas.
func seqMap(seqs []uint64, datas [][]byte) map[uint64][]byte {
	m := make(map[uint64][]byte, len(seqs))
	for i, s := range seqs {
		m[s] = datas[i]
	}
	return m
}

func openT(t testing.TB, dir string, opts Options) *Disk {
	t.Helper()
	d, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// faultFS injects failures into the spool's writes.
type faultFS struct {
	osFS
	mu        sync.Mutex
	writeErr  error         // WriteAt writes half the bytes, then fails with it
	syncErr   error         // Sync of a file fails
	truncErr  error         // Truncate fails
	createErr error         // creating a file fails
	gate      chan struct{} // if set, Sync of a file waits for it to be closed
	entered   chan struct{} // receives (non-blocking) when a Sync starts waiting on gate
	syncs     int           // Syncs of files that succeeded
}

func (f *faultFS) set(fn func(*faultFS)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *faultFS) get() faultFS {
	f.mu.Lock()
	defer f.mu.Unlock()
	return faultFS{writeErr: f.writeErr, syncErr: f.syncErr, truncErr: f.truncErr,
		createErr: f.createErr, gate: f.gate, entered: f.entered, syncs: f.syncs}
}

func (f *faultFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	if flag&os.O_CREATE != 0 {
		if err := f.get().createErr; err != nil {
			return nil, &os.PathError{Op: "open", Path: name, Err: err}
		}
	}
	real, err := f.osFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{file: real, fs: f}, nil
}

type faultFile struct {
	file
	fs *faultFS
}

func (ff *faultFile) WriteAt(b []byte, off int64) (int, error) {
	if err := ff.fs.get().writeErr; err != nil {
		n, _ := ff.file.WriteAt(b[:len(b)/2], off)
		return n, err
	}
	return ff.file.WriteAt(b, off)
}

func (ff *faultFile) Sync() error {
	st := ff.fs.get()
	if st.gate != nil {
		select {
		case st.entered <- struct{}{}:
		default:
		}
		<-st.gate
	}
	if st.syncErr != nil {
		return st.syncErr
	}
	if err := ff.file.Sync(); err != nil {
		return err
	}
	ff.fs.set(func(f *faultFS) { f.syncs++ })
	return nil
}

func (ff *faultFile) Truncate(size int64) error {
	if err := ff.fs.get().truncErr; err != nil {
		return err
	}
	return ff.file.Truncate(size)
}

var (
	errENOSPC = syscall.ENOSPC
	errEIO    = syscall.EIO
)

func openFault(t testing.TB, dir string, opts Options) (*Disk, *faultFS) {
	t.Helper()
	ffs := &faultFS{}
	d, err := open(dir, opts, ffs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, ffs
}
