// Package registry is the local mode's thing registry: thing types, things, their shadows with
// AWS IoT's semantics and limits, a bounded history of numeric telemetry and the records set
// aside, in one SQLite file (modernc.org/sqlite, pure Go). *Registry is the processor's Sink in
// local mode and serves the read API in types.go to the HTTP API and dashboard.
//
// Shadows. state.reported is merged per leaf, last writer (by received_at) wins; a JSON null
// deletes (nested ones too); version increases by one for every batch that changes the document
// and never for a redelivered or stale record; metadata.reported holds {"timestamp": <Unix s>}
// per leaf, like AWS. Internally every leaf keeps its received_at in nanoseconds, and deletions
// are remembered, so an older record never overwrites or resurrects what a newer one wrote. A
// merged state over processor.MaxShadowBytes (8192 bytes of compact reported JSON, what AWS
// counts) or processor.MaxShadowDepth (6 levels, the reported object being level 1), or with
// more properties than Options.MaxProperties (--max-properties), is rejected: the records that
// cannot fit are set aside with the reason, the others are applied. The device API refuses such
// records before they are stored, with what applicable.go reads (KnownThings, ReportedState); this is
// the backstop.
// Shadow renders exactly what GetThingShadow returns: {"state":{"reported":…},
// "metadata":{"reported":…},"version":N,"timestamp":<now, Unix s>}.
//
// Desired state (desired.go): UpdateDesired merges an AWS update request's state.desired into a
// thing's desired state (null deletes, version, metadata.desired); Shadow then shows desired,
// delta and their metadata as GetThingShadow does. The rendered delta of every thing with desired
// state is kept in memory for the device API (Delta, read without a lock), refreshed after each
// Apply; Options.OnDelta is called when it changes.
//
// Things. A thing is created with the type of its first record and keeps it: a later record for
// the same thing name with another type is set aside with the reason "thing X exists with type
// Y". FirstSeen and LastSeen span the thing's records that were applied or set aside for a
// shadow limit; Messages counts applied records only. A thing created with its credential
// (coapgw device add) counts as first seen when it was added.
//
// Exactly once. Apply runs in one transaction per batch, with synchronous=FULL in WAL mode, so a
// batch is durable when Apply returns, and the spool cursor moves only after that. In the same
// transaction the registry records, per gateway, the highest sequence number it has processed
// (applied, duplicate or set aside). This assumes what the local spool guarantees: one consumer
// sees each gateway's records in increasing seq order, so a record at or below the mark has been
// processed and is reported as Duplicate without touching anything. HighWater returns the mark;
// the gateway raises its spool's sequence above it at start, so a spool directory deleted or
// replaced while the registry is kept does not restart below the mark (its new records would
// all look like duplicates).
//
// History. Every numeric leaf of every applied record is a point (property = keys joined with
// "."). The points of one record are stored together as one history entry. An Apply writes all
// its entries as one row of a log, which the writer also keeps in memory by thing for readers;
// when the log holds 200,000 entries, they are compacted into one chunk row per thing
// (history.go), an eighth of the things in each of the next eight batches, so the table clustered
// by thing gets one insert per thing per compaction instead of one random page write per record.
// Retention: HistoryMaxAge, and HistoryMaxPoints records with numeric properties per thing, which
// is HistoryMaxPoints points per property for the usual device that sends all its properties in
// every record (a property sent in only some records keeps fewer). Pruning deletes whole chunks
// and never scans the whole table on the hot path: at a compaction, each thing that got
// HistoryMaxPoints/10 entries since its last trim loses the chunks older than those holding its
// newest HistoryMaxPoints (a range delete on its key), and each Apply drops the chunks older than
// HistoryMaxAge of a few things (round robin). A thing may so hold more entries than the limit;
// reads never return more than HistoryMaxPoints points per property, nor any older than
// HistoryMaxAge.
//
// Things list. Things are listed by the seen column, last_seen in whole seconds, newest first:
// its indexes are updated at most once a second per thing, not with every record. They can also
// be sorted by first seen, records applied (the counted column, written with seen), name or type
// name, either way (list.go); every sort is a keyset walk on an index, and an indexed column is
// written only when its value changes. A page can carry each thing's newest reported values
// (ThingQuery.Latest), read from its shadow, with their SenML units.
//
// Retry (retry.go). RetrySetAsides runs set-aside records (by reason, or one by gw and seq)
// through the apply step again, deleting each one's set-aside row in the transaction that
// applies it, or setting it aside again with the new reason: never applied twice, never lost.
//
// Credentials. Device credentials (credentials.go) live in the same file: one per thing, its key
// sealed by internal/credential. Adding one creates the thing (and its type) if needed. The file
// and its WAL and SHM files are mode 0600.
//
// Concurrency. One writer connection (Apply, serialised) and a pool of read-only connections; in
// WAL mode readers never wait for the writer and the writer never waits for readers.
//
// Bounds (bounds.go). MaxSetAside: the set-aside table keeps the newest records, the oldest
// go when a batch takes it past the cap (never refusing a record or holding up the processor);
// Counts and SetAsidePage.Total count the records held, Counts.SetAsideDropped those dropped.
// HistoryMaxBytes: the history's size on disk, estimated as chunks are written and deleted and
// checked against SQLite's dbstat (within 3% in TestHistorySizeEstimate and
// BenchmarkHistoryOnDisk; the test allows 20%); above it, the oldest chunks (by their newest
// entry) go first. The history log, not yet compacted (at most two generations of logMax
// entries), is outside it.
//
// Sizes on disk, measured with dbstat by BenchmarkHistoryOnDisk and BenchmarkSetAsideOnDisk
// (go test -run '^$' -bench 'HistoryOnDisk|SetAsideOnDisk' -benchtime 1x ./internal/registry/):
// a record of three numeric properties takes 47.5 bytes of history, a thing at the default
// HistoryMaxPoints 46 KiB (up to about a third more between trims), so the default 100,000 things
// (--max-things) take about 4.4 GiB, under the default HistoryMaxBytes of 8 GiB, which bounds
// larger records; a thing's row and indexes about 200 bytes (with a small shadow); 10,000
// set-aside records 2 MiB with 100-byte payloads and 83 MiB with 8 KiB ones. The file does not
// shrink when rows are deleted: SQLite reuses the freed pages.
//
// Configuration (Options): HistoryMaxAge (--history-max-age, default 7 days), HistoryMaxPoints
// (--history-max-points, default 1000), HistoryMaxBytes (--history-max-bytes, default 8 GiB) and
// MaxSetAside (--max-set-aside, default 10,000), each also a COAPGW_* variable and a YAML key
// (internal/config); CacheThings (default 100,000 things kept decoded in memory), ReadConns
// (default 4) and BusyTimeout (default 5s) are for wiring and tests.
//
// Metrics (registered on Options.Registerer; the processor's count what it applies):
//
//	coapgw_registry_set_aside_records                  gauge    set-aside records held
//	coapgw_registry_set_aside_dropped_total            counter  oldest set-aside records deleted for MaxSetAside
//	coapgw_registry_history_bytes                      gauge    the history's estimated size on disk
//	coapgw_registry_history_size_dropped_total         counter  history entries deleted for HistoryMaxBytes
//	coapgw_registry_history_size_dropped_chunks_total  counter  history chunks deleted for HistoryMaxBytes
package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/coapgw/coapgw/internal/processor"
	"github.com/prometheus/client_golang/prometheus"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// ErrInvalidCursor is returned by Things and SetAsides for a cursor they did not produce.
var ErrInvalidCursor = errors.New("invalid cursor")

// Options configure a Registry. The zero value gives the defaults.
type Options struct {
	HistoryMaxAge    time.Duration         // points older than this are dropped; default 7 days
	HistoryMaxPoints int                   // points kept per property per thing; default 1000
	HistoryMaxBytes  int64                 // the history's size on disk, oldest dropped first; default 8 GiB; <0: no cap
	MaxSetAside      int                   // set-aside records kept, oldest dropped first; default 10,000
	Registerer       prometheus.Registerer // for the registry's metrics; nil: not registered
	CacheThings      int                   // things whose state is kept decoded in memory; default 100,000
	ReadConns        int                   // read-only connections; default 4
	BusyTimeout      time.Duration         // SQLite busy timeout; default 5s
	Now              func() time.Time
	Logger           *slog.Logger

	// OnDelta, if set, is called with a thing's name when its delta changed (desired.go): set
	// by UpdateDesired, or by an Apply that changed what the reported state leaves of it. It is
	// called with the registry locked: it must not block or call the registry, except Delta.
	OnDelta func(name string)

	// Batch builds the batch of a retry of set-aside records (retry.go) as the processor builds
	// its batches (processor.(*Processor).Batch); nil: processor.NewBatch with the default
	// decoders.
	Batch func([]processor.Input) *processor.Batch

	// MaxProperties is --max-properties: a record that would give its thing more properties is
	// set aside (applicable.go); 0: no cap (the gateway's default is 256).
	MaxProperties int

	schemaVersion int // tests: migrate only this far (0 = all)
	logMax        int // history entries in the log that trigger a compaction (default 200,000)
}

func (o *Options) setDefaults() {
	if o.HistoryMaxAge <= 0 {
		o.HistoryMaxAge = 7 * 24 * time.Hour
	}
	if o.HistoryMaxPoints <= 0 {
		o.HistoryMaxPoints = 1000
	}
	if o.HistoryMaxBytes == 0 {
		o.HistoryMaxBytes = DefaultHistoryMaxBytes
	}
	if o.MaxSetAside <= 0 {
		o.MaxSetAside = DefaultMaxSetAside
	}
	if o.CacheThings <= 0 {
		o.CacheThings = 100_000
	}
	if o.ReadConns <= 0 {
		o.ReadConns = 4
	}
	if o.BusyTimeout <= 0 {
		o.BusyTimeout = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Batch == nil {
		o.Batch = func(in []processor.Input) *processor.Batch {
			return processor.NewBatch(in, processor.DefaultDecoders())
		}
	}
	if o.logMax <= 0 {
		o.logMax = 200_000
	}
	if o.schemaVersion <= 0 || o.schemaVersion > len(migrations) {
		o.schemaVersion = len(migrations)
	}
}

// Defaults of the bounds (bounds.go; the package doc says what they give on disk).
const (
	DefaultHistoryMaxBytes = 8 << 30
	DefaultMaxSetAside     = 10_000
)

// Registry is the local registry. Its methods are safe for concurrent use.
type Registry struct {
	opts Options
	log  *slog.Logger
	wdb  *sql.DB // the single writer connection
	rdb  *sql.DB // read-only pool

	mu     sync.Mutex // serialises Apply and Close; guards everything below
	closed bool
	w      writer
}

var _ processor.Sink = (*Registry)(nil)

// Open opens (creating if needed) the registry file at path, migrates its schema and loads what
// the writer keeps in memory (thing types, high-water marks). The file and its WAL and SHM files
// are made mode 0600 (files.go).
func Open(path string, opts Options) (*Registry, error) {
	opts.setDefaults()
	if err := privateFiles(path); err != nil {
		return nil, fmt.Errorf("open registry %s: %w", path, err)
	}
	busy := opts.BusyTimeout.Milliseconds()
	base := "file:" + escapePath(path) + fmt.Sprintf("?_pragma=busy_timeout(%d)", busy)
	wdb, err := sql.Open("sqlite", base+"&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(ON)&_pragma=cache_size(-65536)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open registry %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	ctx := context.Background()
	if err := migrate(ctx, wdb, opts.schemaVersion); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open registry %s: %w", path, err)
	}
	rdb, err := sql.Open("sqlite", base+"&_pragma=query_only(1)")
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open registry %s: %w", path, err)
	}
	rdb.SetMaxOpenConns(opts.ReadConns)
	rdb.SetMaxIdleConns(opts.ReadConns)
	r := &Registry{opts: opts, log: opts.Logger, wdb: wdb, rdb: rdb}
	r.w.m = newMetrics()
	if opts.schemaVersion == len(migrations) {
		if err := r.w.init(ctx, wdb, &r.opts); err != nil {
			r.Close()
			return nil, fmt.Errorf("open registry %s: %w", path, err)
		}
	}
	r.w.m.register(opts.Registerer)
	return r, nil
}

// escapePath escapes what SQLite's URI filenames treat specially.
func escapePath(p string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(p)
}

// Close waits for a running Apply and closes the database. Idempotent.
func (r *Registry) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	r.w.close()
	r.w.m.unregister(r.opts.Registerer)
	return errors.Join(r.rdb.Close(), r.wdb.Close())
}

var errClosed = errors.New("registry closed")
