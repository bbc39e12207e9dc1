package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Device credentials. A credential names one thing by its identity, "{type}/{thing}", and holds
// its key sealed by the caller (internal/credential): the registry stores and returns the bytes
// it is given and never sees a key in the clear. A thing has at most one credential. Adding one
// creates the thing type and the thing if they do not exist yet (the thing then shows in the
// things list with no messages); a thing that exists with another type cannot get one.
//
// Every change increments a generation counter (CredentialGeneration), so that a gateway sees
// changes made by another process, coapgw device, with one cheap query.

// ErrCredentialExists is returned by AddCredential for a thing that has a credential.
var ErrCredentialExists = errors.New("credential exists")

// ErrNoCredential is returned for an identity without a credential.
var ErrNoCredential = errors.New("no such credential")

// StoredCredential is one credential as stored.
type StoredCredential struct {
	Identity  string // "{type}/{thing}"
	Type      string
	Thing     string
	SealedKey []byte
	Created   time.Time
	Rotated   time.Time // when the key was last set (= Created for a key never rotated)
	Revoked   time.Time // zero: not revoked
}

const selCredential = `SELECT c.identity, tt.name, t.name, c.sealed_key, c.created_at, c.rotated_at, c.revoked_at
	FROM credentials c JOIN things t ON t.id = c.thing_id JOIN thing_types tt ON tt.id = t.type_id`

// AddCredential gives the thing typ/thing a credential with the sealed key, creating the thing
// type and the thing if needed.
func (r *Registry) AddCredential(ctx context.Context, typ, thing string, sealedKey []byte) error {
	return r.credTx(ctx, func(tx *sql.Tx, now int64) error {
		var thingID, typeID int64
		var typeName string
		err := tx.QueryRowContext(ctx, `SELECT t.id, tt.id, tt.name FROM things t JOIN thing_types tt ON tt.id = t.type_id
			WHERE t.name = ?`, thing).Scan(&thingID, &typeID, &typeName)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			if err := tx.QueryRowContext(ctx, stmtSQL["insType"], typ, now).Scan(&typeID); err != nil {
				return fmt.Errorf("create thing type %s: %w", typ, err)
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO things (name, type_id, first_seen, last_seen, seen) VALUES (?, ?, ?, ?, ?)`,
				thing, typeID, now, now, seenSecond(now))
			if err != nil {
				return fmt.Errorf("create thing %s: %w", thing, err)
			}
			if thingID, err = res.LastInsertId(); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE thing_types SET things = things + 1 WHERE id = ?;
				UPDATE totals SET things = things + 1 WHERE id = 1`, typeID); err != nil {
				return fmt.Errorf("count thing %s: %w", thing, err)
			}
		case err != nil:
			return fmt.Errorf("load thing %s: %w", thing, err)
		case typeName != typ:
			return fmt.Errorf("thing %s exists with type %s", thing, typeName)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO credentials (identity, thing_id, sealed_key, created_at, rotated_at)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, typ+"/"+thing, thingID, sealedKey, now, now)
		if err != nil {
			return fmt.Errorf("add credential %s/%s: %w", typ, thing, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(fmt.Errorf("%s/%s: %w", typ, thing, ErrCredentialExists), err)
		}
		return r.credChanged(ctx, tx, typ+"/"+thing)
	})
}

// RotateCredential replaces the identity's key with sealedKey; a revoked credential is valid
// again.
func (r *Registry) RotateCredential(ctx context.Context, identity string, sealedKey []byte) error {
	return r.credTx(ctx, func(tx *sql.Tx, now int64) error {
		res, err := tx.ExecContext(ctx, `UPDATE credentials SET sealed_key = ?, rotated_at = ?, revoked_at = 0 WHERE identity = ?`,
			sealedKey, now, identity)
		if err != nil {
			return fmt.Errorf("rotate credential %s: %w", identity, err)
		}
		return r.credUpdated(ctx, tx, res, identity)
	})
}

// RevokeCredential marks the identity's credential revoked. The thing keeps it (and so stays
// bound: it still may not be written over plain CoAP) until RotateCredential gives it a new key.
// Revoking a revoked credential changes nothing and is not an error.
func (r *Registry) RevokeCredential(ctx context.Context, identity string) error {
	return r.credTx(ctx, func(tx *sql.Tx, now int64) error {
		res, err := tx.ExecContext(ctx, `UPDATE credentials SET revoked_at = CASE WHEN revoked_at = 0 THEN ? ELSE revoked_at END
			WHERE identity = ?`, now, identity)
		if err != nil {
			return fmt.Errorf("revoke credential %s: %w", identity, err)
		}
		return r.credUpdated(ctx, tx, res, identity)
	})
}

// Credential returns the identity's credential, or ErrNoCredential.
func (r *Registry) Credential(ctx context.Context, identity string) (StoredCredential, error) {
	var c StoredCredential
	var created, rotated, revoked int64
	err := r.rdb.QueryRowContext(ctx, selCredential+` WHERE c.identity = ?`, identity).Scan(&c.Identity, &c.Type, &c.Thing,
		&c.SealedKey, &created, &rotated, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("%s: %w", identity, ErrNoCredential)
	}
	if err != nil {
		return c, fmt.Errorf("load credential %s: %w", identity, err)
	}
	c.Created, c.Rotated, c.Revoked = utcNanos(created), utcNanos(rotated), utcNanos(revoked)
	return c, nil
}

// Credentials returns every credential, by identity.
func (r *Registry) Credentials(ctx context.Context) ([]StoredCredential, error) {
	var out []StoredCredential
	err := eachRow(r.rdb.QueryContext(ctx, selCredential+` ORDER BY c.identity`))(func(rows *sql.Rows) error {
		var c StoredCredential
		var created, rotated, revoked int64
		err := rows.Scan(&c.Identity, &c.Type, &c.Thing, &c.SealedKey, &created, &rotated, &revoked)
		c.Created, c.Rotated, c.Revoked = utcNanos(created), utcNanos(rotated), utcNanos(revoked)
		out = append(out, c)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list credentials: %w", err)
	}
	return out, nil
}

// CredentialBound reports whether the thing has a credential (revoked or not). Things are unique
// by name, so typ is not needed to answer: a thing bound under one type is bound under any.
func (r *Registry) CredentialBound(ctx context.Context, typ, thing string) (bool, error) {
	var n int
	err := r.rdb.QueryRowContext(ctx, `SELECT count(*) FROM credentials c JOIN things t ON t.id = c.thing_id
		WHERE t.name = ?`, thing).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("credential of %s/%s: %w", typ, thing, err)
	}
	return n > 0, nil
}

// CredentialGeneration is a number that every change to the credentials increases.
func (r *Registry) CredentialGeneration(ctx context.Context) (int64, error) {
	var gen int64
	if err := r.rdb.QueryRowContext(ctx, `SELECT gen FROM credential_gen WHERE id = 1`).Scan(&gen); err != nil {
		return 0, fmt.Errorf("credential generation: %w", err)
	}
	return gen, nil
}

// credTx runs fn in a write transaction, serialised with Apply. The writer's caches need no
// update: it creates thing types with an upsert and never caches that a thing does not exist.
func (r *Registry) credTx(ctx context.Context, fn func(tx *sql.Tx, now int64) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errClosed
	}
	tx, err := r.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("registry: begin: %w", err)
	}
	if err := fn(tx, r.opts.Now().UnixNano()); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("registry: commit: %w", err)
	}
	return nil
}

// credUpdated checks that an UPDATE of identity's credential found it, and counts the change.
func (r *Registry) credUpdated(ctx context.Context, tx *sql.Tx, res sql.Result, identity string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", identity, ErrNoCredential)
	}
	return r.credChanged(ctx, tx, identity)
}

func (r *Registry) credChanged(ctx context.Context, tx *sql.Tx, identity string) error {
	if _, err := tx.ExecContext(ctx, `UPDATE credential_gen SET gen = gen + 1 WHERE id = 1`); err != nil {
		return fmt.Errorf("credential %s: %w", identity, err)
	}
	return nil
}

// learnType makes sure the writer knows the thing type id: a thing (and its type) may have been
// created by AddCredential, in this process or another, since the types were loaded.
func (a *applyTx) learnType(id int64) error {
	if _, ok := a.w.tnames[id]; ok {
		return nil
	}
	var name string
	if err := a.tx.QueryRowContext(a.ctx, `SELECT name FROM thing_types WHERE id = ?`, id).Scan(&name); err != nil {
		return fmt.Errorf("load thing type %d: %w", id, err)
	}
	a.w.types[name], a.w.tnames[id] = id, name
	return nil
}

// utcNanos is a stored time, the zero Time for 0.
func utcNanos(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}
