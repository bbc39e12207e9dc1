package registry

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are applied in order, each in its own transaction, and PRAGMA user_version records
// how many have been applied. Never edit one that has shipped; append a new one.
//
// Times are Unix nanoseconds (UTC). Sequence numbers are stored as int64.
var migrations = []migration{
	// 1: thing types, things with their shadow, the applied high-water marks, totals.
	{sql: `CREATE TABLE thing_types (
		id         INTEGER PRIMARY KEY,
		name       TEXT NOT NULL UNIQUE,
		created_at INTEGER NOT NULL,
		things     INTEGER NOT NULL DEFAULT 0
	);
	CREATE TABLE things (
		id         INTEGER PRIMARY KEY,
		name       TEXT NOT NULL UNIQUE,
		type_id    INTEGER NOT NULL REFERENCES thing_types(id),
		first_seen INTEGER NOT NULL,
		last_seen  INTEGER NOT NULL,
		messages   INTEGER NOT NULL DEFAULT 0,
		version    INTEGER NOT NULL DEFAULT 0,
		shadow     BLOB
	);
	CREATE INDEX things_by_last_seen ON things(last_seen);
	CREATE INDEX things_by_type ON things(type_id, last_seen);
	CREATE TABLE applied (
		gw  TEXT PRIMARY KEY,
		seq INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE totals (
		id       INTEGER PRIMARY KEY CHECK (id = 1),
		things   INTEGER NOT NULL,
		messages INTEGER NOT NULL
	);
	INSERT INTO totals (id, things, messages) VALUES (1, 0, 0);`},

	// 2: telemetry history: one row per (thing, record) with all the record's numeric
	// properties, values encoded as (uvarint property id, float64 little-endian) pairs. Rows are
	// appended to recent (cheap: the end of a rowid table and a small index) and moved into
	// samples, clustered by thing, in bulk. (Replaced by migration 4.)
	{sql: `CREATE TABLE properties (
		id   INTEGER PRIMARY KEY,
		path TEXT NOT NULL UNIQUE
	);
	CREATE TABLE samples (
		thing_id INTEGER NOT NULL,
		t        INTEGER NOT NULL,
		vals     BLOB NOT NULL,
		PRIMARY KEY (thing_id, t)
	) WITHOUT ROWID;
	CREATE TABLE recent (
		id       INTEGER PRIMARY KEY,
		thing_id INTEGER NOT NULL,
		t        INTEGER NOT NULL,
		vals     BLOB NOT NULL
	);
	CREATE INDEX recent_by_thing ON recent(thing_id, t);`},

	// 3: records set aside with their reason.
	{sql: `CREATE TABLE set_asides (
		id          INTEGER PRIMARY KEY,
		gw          TEXT NOT NULL,
		seq         INTEGER NOT NULL,
		received_at INTEGER NOT NULL,
		type        TEXT NOT NULL,
		thing       TEXT NOT NULL,
		reason      TEXT NOT NULL,
		payload     BLOB,
		at          INTEGER NOT NULL,
		UNIQUE (gw, seq)
	);
	ALTER TABLE totals ADD COLUMN set_aside INTEGER NOT NULL DEFAULT 0;`},

	// 4: the things list is ordered by seen, last_seen in whole seconds, so that its indexes
	// change at most once a second per thing instead of with every record; history moves to a
	// log of one row per applied batch (history_log) compacted into per-thing chunks of many
	// records (history), see history.go.
	{fn: migrateHistoryChunks},

	// 5: device credentials (credentials.go): one per thing, the key sealed by the caller, and a
	// generation counter that every change increments so that a gateway notices changes made by
	// another process (coapgw device) with one cheap query.
	{sql: `CREATE TABLE credentials (
		identity   TEXT PRIMARY KEY,
		thing_id   INTEGER NOT NULL UNIQUE REFERENCES things(id),
		sealed_key BLOB NOT NULL,
		created_at INTEGER NOT NULL,
		rotated_at INTEGER NOT NULL,
		revoked_at INTEGER NOT NULL DEFAULT 0
	) WITHOUT ROWID;
	CREATE TABLE credential_gen (
		id  INTEGER PRIMARY KEY CHECK (id = 1),
		gen INTEGER NOT NULL
	);
	INSERT INTO credential_gen (id, gen) VALUES (1, 0);`},

	// 6: bounds (bounds.go): the set-aside records dropped for MaxSetAside, the history's
	// estimated size on disk for HistoryMaxBytes, and an index to find its oldest chunks.
	{fn: migrateBounds},

	// 7: desired state (desired.go): one document per thing that has one, encoded as the
	// reported state is (processor.Doc), its version being the thing's shadow version.
	{sql: `CREATE TABLE desired (
		thing_id INTEGER PRIMARY KEY REFERENCES things(id),
		doc      BLOB NOT NULL
	);`},

	// 8: the unit of a property (SenML readings carry one, history_write.go): the last unit a
	// reading of that property came with, "" if none did.
	{sql: `ALTER TABLE properties ADD COLUMN unit TEXT NOT NULL DEFAULT '';`},

	// 9: the things list sorted by other columns (list.go) with indexes that do not change with
	// every record: by name and type (type_id, name), by first_seen (written only when it
	// changes), and by counted, the messages count written with seen (once a second per thing
	// at most) or when it lags by more than 16 records and a sixteenth. The content format of a set-aside record, so that it
	// can be retried (retry.go): NULL when unknown (set aside before this migration), -1 when
	// the payload is the whole undecodable record; and set-aside records by reason.
	{sql: `ALTER TABLE things ADD COLUMN counted INTEGER NOT NULL DEFAULT 0;
	UPDATE things SET counted = messages;
	CREATE INDEX things_by_type_name ON things(type_id, name);
	CREATE INDEX things_by_first ON things(first_seen);
	CREATE INDEX things_by_type_first ON things(type_id, first_seen);
	CREATE INDEX things_by_counted ON things(counted);
	CREATE INDEX things_by_type_counted ON things(type_id, counted);
	ALTER TABLE set_asides ADD COLUMN format INTEGER;
	CREATE INDEX set_asides_by_reason ON set_asides(reason);`},
}

// migration is one schema step: SQL, or a function for what SQL alone cannot do.
type migration struct {
	sql string
	fn  func(ctx context.Context, tx *sql.Tx) error
}

func (m migration) apply(ctx context.Context, tx *sql.Tx) error {
	if m.fn != nil {
		return m.fn(ctx, tx)
	}
	_, err := tx.ExecContext(ctx, m.sql)
	return err
}

// migrate brings the database to schema version upTo (len(migrations) in production).
func migrate(ctx context.Context, db *sql.DB, upTo int) error {
	var version int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this binary knows (%d)", version, len(migrations))
	}
	for v := version; v < upTo; v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migration %d: %w", v+1, err)
		}
		if err := migrations[v].apply(ctx, tx); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %d: %w", v+1, err)
		}
	}
	return nil
}
