// Package spool is the gateway's durable inbox: an append-only log of opaque entries that a device's
// record must reach, fsync'd, before the device gets its 2.04.
//
// A spool directory holds numbered segment files (00000000000000000001.seg, named by the first
// sequence number that may be in them), a cursor file saying what the forwarder has delivered, an
// incarnation file and a LOCK file. Each entry is stored as one frame (see frame.go): a CRC32C
// (Castagnoli), the data length and the entry's sequence number, then the data. Sequence numbers strictly increase and are never
// reused; gaps are allowed (a batch that failed to reach the disk leaves one).
//
// Appends are group-committed: Append queues the frame in memory and returns at once; a single commit
// goroutine writes everything queued (one write per 1 MiB chunk of queued frames), fsyncs once for the
// whole batch, then calls the batch's done callbacks in sequence order. Throughput comes from
// batching, not from skipping fsync.
//
// Sequence numbers are leased: the cursor file also holds a floor, extended (one small atomic write)
// every 2^20 sequence numbers, and every frame written is below it. A restart starts at the floor, so
// no sequence number is ever reused, even if the entry that held it was destroyed; each restart leaves
// a gap of up to 2^20.
//
// A spool directory that is deleted or replaced starts over at 1 (Fresh reports that Open found no
// state), while what the spool fed may remember higher numbers. RaiseSeq lets the stage after the
// spool lift the sequence above what it knows was used before the first Append: the gateway raises
// it past the local registry's high-water mark for its id, and in AWS mode starts a fresh spool at
// the wall clock in nanoseconds. The raised floor is persisted at once; the next batch starts a new
// segment (recovery accepts a frame only within 2^32 of the one before it in a segment). The
// incarnation file (16 random hex digits, written at the first Open) names the directory's life:
// Incarnation is the same across restarts and new for a directory deleted or replaced, so (gateway
// id, incarnation, seq) is unique even where a replacement reuses the gateway id (the FIFO
// deduplication id, internal/queue/sqs).
//
// Recovery on Open: a torn tail (a partial, zeroed or otherwise invalid region at the end of the last
// segment) is truncated to the last good frame. An invalid region anywhere else is skipped: the
// decoder resynchronises by scanning forward byte by byte for the next frame that is valid (CRC, sane
// length, sequence number in range), so every intact record after a damaged one is still delivered.
// Each skipped region counts as one corrupt record (Stats.Corrupt, the corrupt metric, a log line).
// A length field is never trusted to allocate: frames are capped at 16 MiB and anything claiming more
// is corruption.
//
// A failing disk (write error, ENOSPC, fsync error) fails the whole batch: its callbacks get an error
// wrapping ErrUnavailable, the segment is truncated back to its last durable offset before anything
// else is written, and the next batch tries again, so the spool recovers by itself when the disk does.
// Nothing is reported durable that was not fsync'd, and Next only returns fsync'd entries.
//
// Memory implements the same Log semantics without files, for tests and for local setups that do not
// need durability.
//
// Metrics (registered on Options.Registerer):
//
//	coapgw_spool_appended_records_total   counter   entries made durable
//	coapgw_spool_appended_bytes_total     counter   data bytes of those entries
//	coapgw_spool_fsync_duration_seconds   histogram one observation per segment fsync
//	coapgw_spool_commit_batch_records     histogram entries per group commit
//	coapgw_spool_depth_records            gauge     durable entries not yet committed (delivered)
//	coapgw_spool_size_bytes               gauge     bytes held (segment files, or memory)
//	coapgw_spool_corrupt_records_total    counter   corrupt regions skipped or truncated
//	coapgw_spool_write_errors_total       counter   failed batch writes, fsyncs and segment creations
//
// Configuration: Options.MaxBytes (config key spool_max_bytes) and Options.SegmentBytes
// (spool_segment_bytes).
package spool

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	// ErrFull is returned by Append when the byte cap is reached; the caller answers 5.03.
	ErrFull = errors.New("spool full")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("spool closed")
	// ErrUnavailable is wrapped by the errors a failing disk causes (write, fsync, segment creation,
	// cursor update). It is passed to done callbacks of a batch that did not reach the disk; the spool
	// keeps retrying with the next batch.
	ErrUnavailable = errors.New("spool unavailable")
	// ErrTooLarge is returned by Append for an entry larger than MaxEntryBytes.
	ErrTooLarge = errors.New("spool entry too large")
)

// MaxEntryBytes is the largest entry Append accepts. The decoder treats any frame claiming more as
// corruption, so a damaged length field never causes a large allocation.
const MaxEntryBytes = maxFrameData

// Entry is one stored entry.
type Entry struct {
	Seq  uint64
	Data []byte // owned by the caller after return
}

// Log is implemented by *Disk and *Memory.
type Log interface {
	// Append copies data and queues it for the next group commit. It never blocks on I/O.
	// done is called exactly once, from the spool's commit goroutine, after the entry is durable
	// (err == nil) or has definitely failed (err != nil; the entry will never be delivered). done must
	// be fast and must not call back into the spool. If Append returns an error, done is not called.
	// A nil done is allowed.
	Append(data []byte, done func(seq uint64, err error)) error
	// Next blocks until at least one durable entry after the last one returned by Next exists (or ctx
	// ends, or the spool is closed), and returns up to max entries in sequence order. After Open,
	// reading starts right after the committed cursor.
	Next(ctx context.Context, max int) ([]Entry, error)
	// Commit records that every entry with Seq <= seq has been delivered downstream. A seq at or below
	// the cursor is a no-op; a seq above the last durable entry is an error.
	Commit(seq uint64) error
	// Stats reports the current state.
	Stats() Stats
	// Close flushes and fsyncs everything appended before it and stops the spool's goroutines.
	// Later calls get ErrClosed. Close is idempotent.
	Close() error
}

var (
	_ Log = (*Disk)(nil)
	_ Log = (*Memory)(nil)
)

// Stats is a snapshot of a spool.
type Stats struct {
	Depth        int64  // durable entries not yet committed
	Bytes        int64  // bytes held: segment files on disk, frames in memory
	Segments     int    // segment files (0 for Memory)
	Corrupt      int64  // corrupt regions skipped or truncated since open
	NextSeq      uint64 // sequence number the next Append gets
	CommittedSeq uint64 // cursor: every entry at or below it is delivered
}

// Options configure a spool. The zero value gives the defaults.
type Options struct {
	MaxBytes     int64                 // byte cap over all segments; default 1 GiB
	SegmentBytes int64                 // roll to a new segment after this many bytes; default 64 MiB
	NoSync       bool                  // skip fsync (CPU benchmarks only; never the default)
	Logger       *slog.Logger          // nil = discard
	Registerer   prometheus.Registerer // nil = don't register
}

const (
	defaultMaxBytes     = 1 << 30
	defaultSegmentBytes = 64 << 20
)

func (o Options) withDefaults() Options {
	if o.MaxBytes <= 0 {
		o.MaxBytes = defaultMaxBytes
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = defaultSegmentBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// segmentLimit is the size at which the writer rolls to a new segment: SegmentBytes, but never more
// than a quarter of the cap, so that deleting delivered segments can always free most of the cap.
func (o Options) segmentLimit() int64 {
	return max(min(o.SegmentBytes, o.MaxBytes/4), 1)
}

// callback is one queued done function with the sequence number it will be called with.
type callback struct {
	seq uint64
	fn  func(uint64, error)
}

// Queued frames are copied once into chunks of chunkSize bytes (an entry larger than that gets a
// chunk of its own), so a burst never copies what is already queued to grow a buffer. Disk recycles
// written chunks, keeping at most maxFreeChunks of them.
const (
	chunkSize     = 1 << 20
	maxFreeChunks = 16
)

// seqRun is a run of consecutive sequence numbers handed to the consumer and not yet committed.
type seqRun struct{ from, to uint64 }

// inflight tracks entries returned by Next (or skipped by Commit) and not yet committed, as runs of
// consecutive sequence numbers, so its size does not grow with the number of entries.
type inflight struct {
	runs []seqRun
	n    int64 // entries in runs
}

func (f *inflight) add(seq uint64) {
	f.n++
	if n := len(f.runs); n > 0 && f.runs[n-1].to+1 == seq {
		f.runs[n-1].to = seq
		return
	}
	f.runs = append(f.runs, seqRun{seq, seq})
}

// commit removes every sequence number <= seq.
func (f *inflight) commit(seq uint64) {
	runs := f.runs
	i := 0
	for ; i < len(runs) && runs[i].to <= seq; i++ {
		f.n -= int64(runs[i].to - runs[i].from + 1)
	}
	runs = runs[i:]
	if len(runs) > 0 && runs[0].from <= seq {
		f.n -= int64(seq - runs[0].from + 1)
		runs[0].from = seq + 1
	}
	if len(runs) == 0 {
		runs = f.runs[:0]
	}
	f.runs = runs
}
