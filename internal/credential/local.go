package credential

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgw/coapgw/internal/registry"
)

// Local is the per-device key source, backed by the local registry. It keeps every credential,
// decrypted, in memory and reloads them all when the registry's credential generation changed,
// which it checks at most every Refresh, on a call to Lookup or Bound (one call does the query,
// concurrent ones use what is loaded). Changes made through the Local itself are seen at once.
type Local struct {
	reg     *registry.Registry
	sealer  *Sealer
	refresh time.Duration
	now     func() time.Time
	log     *slog.Logger

	snap      atomic.Pointer[localSnap]
	nextCheck atomic.Int64 // Unix ns
	mu        sync.Mutex   // one reload at a time
}

type localSnap struct {
	gen   int64
	creds map[string]localCred // by identity
	bound map[string]struct{}  // thing names with a credential, revoked or not
}

type localCred struct {
	Credential
	revoked bool
}

// LocalOptions configure a Local. The zero value gives the defaults.
type LocalOptions struct {
	Refresh time.Duration // how often the registry is checked for changes; default 2s
	Now     func() time.Time
	Logger  *slog.Logger
}

// Device is one credential as Local lists it (never with its key).
type Device struct {
	Identity, Type, Thing string
	Created, Rotated      time.Time
	Revoked               time.Time // zero: not revoked
}

// NewLocal loads the registry's credentials, opening their keys with sealer: an operator key
// other than the one that sealed them is an error here, not at the first handshake.
func NewLocal(ctx context.Context, reg *registry.Registry, sealer *Sealer, opts LocalOptions) (*Local, error) {
	if reg == nil || sealer == nil {
		return nil, errors.New("credential: local store needs a registry and an operator key")
	}
	if opts.Refresh <= 0 {
		opts.Refresh = 2 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Local{reg: reg, sealer: sealer, refresh: opts.Refresh, now: opts.Now, log: opts.Logger}
	if err := l.load(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// Lookup returns the identity's credential: ErrUnknown if it has none, ErrRevoked if revoked.
func (l *Local) Lookup(ctx context.Context, identity string) (Credential, error) {
	c, ok := l.current(ctx).creds[identity]
	switch {
	case !ok:
		return Credential{}, fmt.Errorf("%s: %w", identity, ErrUnknown)
	case c.revoked:
		return Credential{}, fmt.Errorf("%s: %w", identity, ErrRevoked)
	}
	return c.Credential, nil
}

// Bound reports whether the thing has a credential, revoked or not (a revoked one keeps the
// thing off plain CoAP until rotated). Things are unique by name: typ is not needed.
func (l *Local) Bound(ctx context.Context, _, thing string) (bool, error) {
	_, ok := l.current(ctx).bound[thing]
	return ok, nil
}

// BoundBytes is Bound for a thing name in a byte slice, without allocating (the plain CoAP path
// of ingest uses it when the store has it).
func (l *Local) BoundBytes(_, thing []byte) (bool, error) {
	_, ok := l.current(context.Background()).bound[string(thing)]
	return ok, nil
}

// Generation is the registry's credential generation as last loaded: it changes whenever a
// credential may have.
func (l *Local) Generation() uint64 { return uint64(l.snap.Load().gen) }

// current returns the loaded credentials, reloading them first if Refresh has passed and the
// registry's generation changed. A failed check keeps what is loaded (and is logged).
func (l *Local) current(ctx context.Context) *localSnap {
	if now := l.now().UnixNano(); now >= l.nextCheck.Load() && l.mu.TryLock() {
		defer l.mu.Unlock()
		l.nextCheck.Store(now + int64(l.refresh))
		if err := l.reloadLocked(ctx); err != nil {
			l.log.Warn("credentials not reloaded; the ones loaded stay in force", "err", err)
		}
	}
	return l.snap.Load()
}

func (l *Local) load(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextCheck.Store(l.now().UnixNano() + int64(l.refresh))
	return l.reloadLocked(ctx)
}

func (l *Local) reloadLocked(ctx context.Context) error {
	gen, err := l.reg.CredentialGeneration(ctx)
	if err != nil {
		return err
	}
	if s := l.snap.Load(); s != nil && s.gen == gen {
		return nil
	}
	rows, err := l.reg.Credentials(ctx)
	if err != nil {
		return err
	}
	s := &localSnap{gen: gen, creds: make(map[string]localCred, len(rows)), bound: make(map[string]struct{}, len(rows))}
	var errs []error
	for _, row := range rows {
		s.bound[row.Thing] = struct{}{}
		key, err := l.sealer.Open(row.Identity, row.SealedKey)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.creds[row.Identity] = localCred{Credential: Credential{Identity: row.Identity, Type: row.Type, Thing: row.Thing, Key: key},
			revoked: !row.Revoked.IsZero()}
	}
	if len(errs) > 0 {
		return fmt.Errorf("credential: %d of %d keys do not open: %w", len(errs), len(rows), errors.Join(errs...))
	}
	l.snap.Store(s)
	return nil
}

// Add gives the thing named by identity a credential with key (NewKey if nil), creating the
// thing (and its type) if needed, and returns it.
func (l *Local) Add(ctx context.Context, identity string, key []byte) (Credential, error) {
	typ, thing, err := SplitIdentity(identity)
	if err != nil {
		return Credential{}, err
	}
	if key == nil {
		key = NewKey()
	}
	if err := checkDeviceKey(key); err != nil {
		return Credential{}, err
	}
	if err := l.reg.AddCredential(ctx, typ, thing, l.sealer.Seal(identity, key)); err != nil {
		return Credential{}, err
	}
	return Credential{Identity: identity, Type: typ, Thing: thing, Key: key}, l.load(ctx)
}

// Rotate gives identity a new key (NewKey if nil); a revoked credential becomes valid again.
func (l *Local) Rotate(ctx context.Context, identity string, key []byte) (Credential, error) {
	typ, thing, err := SplitIdentity(identity)
	if err != nil {
		return Credential{}, err
	}
	if key == nil {
		key = NewKey()
	}
	if err := checkDeviceKey(key); err != nil {
		return Credential{}, err
	}
	if err := l.reg.RotateCredential(ctx, identity, l.sealer.Seal(identity, key)); err != nil {
		return Credential{}, err
	}
	return Credential{Identity: identity, Type: typ, Thing: thing, Key: key}, l.load(ctx)
}

// Revoke revokes identity's credential: Lookup answers ErrRevoked for it from now on (and other
// processes' Locals within their Refresh).
func (l *Local) Revoke(ctx context.Context, identity string) error {
	if err := l.reg.RevokeCredential(ctx, identity); err != nil {
		return err
	}
	return l.load(ctx)
}

// List returns every credential, by identity, without keys.
func (l *Local) List(ctx context.Context) ([]Device, error) {
	rows, err := l.reg.Credentials(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Device, len(rows))
	for i, r := range rows {
		out[i] = Device{Identity: r.Identity, Type: r.Type, Thing: r.Thing, Created: r.Created, Rotated: r.Rotated, Revoked: r.Revoked}
	}
	return out, nil
}

// checkDeviceKey accepts the keys a device may be given: 16 to 64 bytes (DTLS PSKs of 16 are
// the norm; longer ones are allowed for keys taken with --psk).
func checkDeviceKey(key []byte) error {
	if len(key) < KeyLen || len(key) > 64 {
		return fmt.Errorf("device key: %d bytes, want %d to 64", len(key), KeyLen)
	}
	return nil
}
