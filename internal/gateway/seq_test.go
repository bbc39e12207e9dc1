package gateway

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/coapgw/coapgw/internal/processortest"
	"github.com/coapgw/coapgw/internal/registry"
	"github.com/coapgw/coapgw/internal/spool"
)

func seqTestGateway(t *testing.T, dir string) *Gateway {
	t.Helper()
	sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	g := &Gateway{cfg: testConfig(t), log: slog.New(slog.DiscardHandler), spool: sp}
	g.cfg.Ingest.GatewayID = "gw-t"
	return g
}

// TestRaiseSeqPastRegistry: local mode raises a spool that restarted below the registry's
// high-water mark past it, and leaves a spool already above it alone.
func TestRaiseSeqPastRegistry(t *testing.T) {
	dir := t.TempDir()
	reg, err := registry.Open(filepath.Join(dir, "registry.db"), registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	r := processortest.Rec("gw-t", "sensor", "dev-1", time.Now(), `{"a":1}`)
	r.Seq = 500
	if out, err := reg.Apply(t.Context(), processortest.Batch(t, r)); err != nil || out[0].Result != processor.Applied {
		t.Fatalf("apply: %v %v", out, err)
	}

	g := seqTestGateway(t, dir)
	if err := g.raiseSeqPastRegistry(reg); err != nil {
		t.Fatal(err)
	}
	if next := g.spool.Stats().NextSeq; next != 501 {
		t.Fatalf("next seq = %d, want 501", next)
	}
	if err := g.spool.Close(); err != nil {
		t.Fatal(err)
	}
	g = seqTestGateway(t, dir)
	before := g.spool.Stats().NextSeq
	if err := g.raiseSeqPastRegistry(reg); err != nil {
		t.Fatal(err)
	}
	if next := g.spool.Stats().NextSeq; next != before || next <= 500 {
		t.Fatalf("next seq = %d, want it left at %d (> 500)", next, before)
	}
}

// TestRaiseFreshSeq: AWS mode starts a new spool at the clock, and leaves a spool with state
// alone.
func TestRaiseFreshSeq(t *testing.T) {
	dir := t.TempDir()
	g := seqTestGateway(t, dir)
	now := time.Unix(1_800_000_000, 0)
	if err := g.raiseFreshSeq(now); err != nil {
		t.Fatal(err)
	}
	if next := g.spool.Stats().NextSeq; next != uint64(now.UnixNano()) {
		t.Fatalf("next seq of a fresh spool = %d, want %d", next, now.UnixNano())
	}
	g.spool.Close()
	g = seqTestGateway(t, dir)
	before := g.spool.Stats().NextSeq
	if err := g.raiseFreshSeq(now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if next := g.spool.Stats().NextSeq; next != before {
		t.Fatalf("a spool with state was raised: %d → %d", before, next)
	}
	// Deleted: fresh again, and it starts above what the deleted one handed out.
	g.spool.Close()
	if err := os.RemoveAll(filepath.Join(dir, "spool")); err != nil {
		t.Fatal(err)
	}
	g = seqTestGateway(t, dir)
	later := now.Add(time.Minute)
	if err := g.raiseFreshSeq(later); err != nil {
		t.Fatal(err)
	}
	if next := g.spool.Stats().NextSeq; next != uint64(later.UnixNano()) || next <= before {
		t.Fatalf("next seq after deleting the spool = %d, want %d (> %d)", next, later.UnixNano(), before)
	}
}

// TestRaiseSeqPastStoredRegistry: with --process none the gateway checks a registry local mode
// left behind, creates none where there is none, and starts anyway when it cannot read it.
func TestRaiseSeqPastStoredRegistry(t *testing.T) {
	dir := t.TempDir()
	g := seqTestGateway(t, dir)
	g.cfg.Spool.DataDir = dir
	g.raiseSeqPastStoredRegistry()
	if _, err := os.Stat(filepath.Join(dir, "registry.db")); !os.IsNotExist(err) {
		t.Fatalf("registry.db created by --process none: %v", err)
	}
	if next := g.spool.Stats().NextSeq; next != 1 {
		t.Fatalf("next seq = %d, want 1", next)
	}

	reg, err := registry.Open(filepath.Join(dir, "registry.db"), registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := processortest.Rec("gw-t", "sensor", "dev-1", time.Now(), `{"a":1}`)
	r.Seq = 77
	if _, err := reg.Apply(t.Context(), processortest.Batch(t, r)); err != nil {
		t.Fatal(err)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	g.raiseSeqPastStoredRegistry()
	if next := g.spool.Stats().NextSeq; next != 78 {
		t.Fatalf("next seq = %d, want 78", next)
	}

	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "registry.db"), []byte("not a database, not at all, no"), 0o600); err != nil {
		t.Fatal(err)
	}
	g = seqTestGateway(t, other)
	g.cfg.Spool.DataDir = other
	g.raiseSeqPastStoredRegistry() // logs, does not panic or fail
	if next := g.spool.Stats().NextSeq; next != 1 {
		t.Fatalf("next seq = %d after an unreadable registry, want 1", next)
	}
}
