package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestReopen: after a restart, Next starts right after the cursor, Depth counts what is left, and new
// sequence numbers are above everything before.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	d := openT(t, dir, Options{})
	datas := entries("reopen", 20, 50)
	seqs := okSeqs(t, appendAll(t, d, datas))
	readN(t, d, 20)
	if err := d.Commit(seqs[11]); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	d = openT(t, dir, Options{})
	st := d.Stats()
	if st.CommittedSeq != seqs[11] || st.Depth != 8 || st.NextSeq <= seqs[19] {
		t.Fatalf("after reopen: %+v; want cursor %d, depth 8, next seq > %d", st, seqs[11], seqs[19])
	}
	checkEntries(t, readN(t, d, 8), seqMap(seqs[12:], datas[12:]))
	readNone(t, d)
	r := appendWait(t, d, []byte("new"))
	if r.err != nil || r.seq <= seqs[19] {
		t.Fatalf("append after reopen: %+v", r)
	}
	if es := readN(t, d, 1); es[0].Seq != r.seq {
		t.Fatalf("Next = %d, want %d", es[0].Seq, r.seq)
	}

	// Uncommitted entries come back after every restart until they are committed.
	d.Close()
	d = openT(t, dir, Options{})
	if es := readN(t, d, 9); es[0].Seq != seqs[12] || es[8].Seq != r.seq {
		t.Fatalf("second reopen: entries %d..%d", es[0].Seq, es[8].Seq)
	}
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestSegmentsRollAndDelete: the writer rolls segments at the configured size, Commit deletes the
// delivered ones, and Stats agrees with the files.
func TestSegmentsRollAndDelete(t *testing.T) {
	dir := t.TempDir()
	d := openT(t, dir, Options{SegmentBytes: 1000})
	datas := entries("roll", 100, 100)
	var seqs []uint64
	for i := 0; i < 100; i += 4 {
		seqs = append(seqs, okSeqs(t, appendAll(t, d, datas[i:i+4]))...)
	}
	st := d.Stats()
	files := segFiles(t, dir)
	if st.Segments != len(files) || st.Segments < 10 || st.Bytes != 100*116 {
		t.Fatalf("Stats = %+v with %d files; want >= 10 segments, %d bytes", st, len(files), 100*116)
	}
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil || fi.Size() > 1000 {
			t.Fatalf("segment %s: %v bytes, err %v; want at most 1000", f, fi.Size(), err)
		}
	}
	readN(t, d, 100)
	if err := d.Commit(seqs[49]); err != nil {
		t.Fatal(err)
	}
	st = d.Stats()
	files = segFiles(t, dir)
	var onDisk int64
	for _, f := range files {
		fi, _ := os.Stat(f)
		onDisk += fi.Size()
	}
	firsts, _ := listSegments(dir)
	for i := 0; i+1 < len(firsts); i++ {
		if firsts[i+1] <= seqs[49]+1 {
			t.Fatalf("segment %d (next %d) is delivered by cursor %d but was kept", firsts[i], firsts[i+1], seqs[49])
		}
	}
	if st.Segments != len(files) || st.Bytes != onDisk || st.Depth != 50 {
		t.Fatalf("after Commit: %+v, %d files of %d bytes", st, len(files), onDisk)
	}
	if onDisk > 50*116+1000 {
		t.Fatalf("%d bytes left on disk for 50 undelivered entries", onDisk)
	}
	d.Close()
	d = openT(t, dir, Options{SegmentBytes: 1000})
	checkEntries(t, readN(t, d, 50), seqMap(seqs[50:], datas[50:]))
}

// TestSeqNotReusedAfterEverythingDeleted: once every entry is delivered and every segment deleted,
// a restart still continues above the last sequence number.
func TestSeqNotReusedAfterEverythingDeleted(t *testing.T) {
	dir := t.TempDir()
	d := openT(t, dir, Options{SegmentBytes: 100}) // one 116-byte frame per segment
	var last uint64
	for range 10 {
		r := appendWait(t, d, make([]byte, 100))
		last = r.seq
	}
	readN(t, d, 10)
	if err := d.Commit(last); err != nil {
		t.Fatal(err)
	}
	if files := segFiles(t, dir); len(files) != 0 {
		t.Fatalf("segments left after delivering everything: %v", files)
	}
	if st := d.Stats(); st.Bytes != 0 || st.Segments != 0 || st.Depth != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	d.Close()
	d = openT(t, dir, Options{SegmentBytes: 100})
	if st := d.Stats(); st.NextSeq <= last || st.CommittedSeq != last {
		t.Fatalf("after restart: %+v; want next seq > %d", st, last)
	}
	r := appendWait(t, d, []byte("x"))
	if r.err != nil || r.seq <= last {
		t.Fatalf("append = %+v, want seq > %d", r, last)
	}
	if es := readN(t, d, 1); es[0].Seq != r.seq {
		t.Fatalf("Next = %d", es[0].Seq)
	}
}

// TestLockExclusive: a second Open of the same directory fails while the first is open.
func TestLockExclusive(t *testing.T) {
	dir := t.TempDir()
	d := openT(t, dir, Options{})
	if d2, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "in use") {
		if d2 != nil {
			d2.Close()
		}
		t.Fatalf("second Open = %v, want in-use error", err)
	}
	d.Close()
	d2, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after Close = %v", err)
	}
	d2.Close()
}

// TestMetrics: the documented metrics exist under their names and follow what the spool does.
func TestMetrics(t *testing.T) {
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			l := im.open(t, Options{Registerer: reg})
			seqs := okSeqs(t, appendAll(t, l, entries("m", 10, 34))) // 34 + 16 = 50 bytes a frame
			readN(t, l, 10)
			m := gather(t, reg)
			want := map[string]float64{
				"coapgw_spool_appended_records_total": 10,
				"coapgw_spool_appended_bytes_total":   340,
				"coapgw_spool_depth_records":          10,
				"coapgw_spool_size_bytes":             500,
				"coapgw_spool_corrupt_records_total":  0,
				"coapgw_spool_write_errors_total":     0,
			}
			for name, v := range want {
				if got, ok := m[name]; !ok || got != v {
					t.Errorf("%s = %v (present %v), want %v", name, got, ok, v)
				}
			}
			if got := m["coapgw_spool_commit_batch_records_count"]; got < 1 || got > 10 {
				t.Errorf("commit batch observations = %v", got)
			}
			if got := m["coapgw_spool_commit_batch_records_sum"]; got != 10 {
				t.Errorf("commit batch records sum = %v, want 10", got)
			}
			if _, disk := l.(*Disk); disk {
				if got := m["coapgw_spool_fsync_duration_seconds_count"]; got < 1 {
					t.Errorf("fsync observations = %v", got)
				}
			}
			if err := l.Commit(seqs[9]); err != nil {
				t.Fatal(err)
			}
			if got := gather(t, reg)["coapgw_spool_depth_records"]; got != 0 {
				t.Errorf("depth after Commit = %v", got)
			}
		})
	}
}

func TestMetricsCorruptAndWriteErrors(t *testing.T) {
	dir := t.TempDir()
	d := openT(t, dir, Options{})
	appendWait(t, d, []byte("x"))
	d.Close()
	modify(t, segFiles(t, dir)[0], func(b []byte) []byte { return append(b, 1, 2, 3) })

	reg := prometheus.NewRegistry()
	ffs := &faultFS{}
	d2, err := open(dir, Options{Registerer: reg}, ffs)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	ffs.set(func(f *faultFS) { f.syncErr = errEIO })
	failedBatch(t, d2, entries("f", 1, 10), errEIO)
	m := gather(t, reg)
	if m["coapgw_spool_corrupt_records_total"] != 1 || m["coapgw_spool_write_errors_total"] != 1 {
		t.Fatalf("corrupt = %v, write errors = %v; want 1 and 1",
			m["coapgw_spool_corrupt_records_total"], m["coapgw_spool_write_errors_total"])
	}
}

// gather returns every sample of reg by name (histograms as _count and _sum).
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[mf.GetName()] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[mf.GetName()] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[mf.GetName()+"_count"] = float64(m.GetHistogram().GetSampleCount())
				out[mf.GetName()+"_sum"] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}
