package credential

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// RevocationFile is a revocation list in a file: one identity a line; blank lines and lines
// starting with # are ignored. It is read when opened and checked again, on a Revoked call, when
// Check has passed since the last check: a stat, and a reload if the file's size or modification
// time changed. So a change is seen within Check of the first Revoked call after it, by no
// goroutine of its own. A file that cannot be read or goes missing later keeps the last list in
// force (logged at most once per change of state): revocations are never dropped by accident.
type RevocationFile struct {
	path  string
	check time.Duration
	now   func() time.Time
	log   *slog.Logger

	list      atomic.Pointer[map[string]struct{}]
	gen       atomic.Uint64
	nextCheck atomic.Int64 // Unix ns
	mu        sync.Mutex   // one reload at a time; guards below
	size      int64
	mtime     time.Time
	failing   bool
}

// OpenRevocationFile reads the revocation list at path, to be checked for changes every check
// (default 1s). now and log may be nil.
func OpenRevocationFile(path string, check time.Duration, now func() time.Time, log *slog.Logger) (*RevocationFile, error) {
	if check <= 0 {
		check = time.Second
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &RevocationFile{path: path, check: check, now: now, log: log}
	if err := f.reload(true); err != nil {
		return nil, err
	}
	return f, nil
}

// Revoked reports whether identity is on the list.
func (f *RevocationFile) Revoked(_ context.Context, identity string) (bool, error) {
	if now := f.now().UnixNano(); now >= f.nextCheck.Load() && f.mu.TryLock() {
		f.nextCheck.Store(now + int64(f.check))
		f.reloadLocked(false)
		f.mu.Unlock()
	}
	_, ok := (*f.list.Load())[identity]
	return ok, nil
}

// Generation increases whenever the list is reloaded with a change of the file.
func (f *RevocationFile) Generation() uint64 { return f.gen.Load() }

// Len is how many identities are on the list.
func (f *RevocationFile) Len() int { return len(*f.list.Load()) }

func (f *RevocationFile) reload(first bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextCheck.Store(f.now().UnixNano() + int64(f.check))
	return f.reloadLocked(first)
}

func (f *RevocationFile) reloadLocked(first bool) error {
	fi, err := os.Stat(f.path)
	if err == nil && !first && fi.Size() == f.size && fi.ModTime().Equal(f.mtime) {
		return nil
	}
	var data []byte
	if err == nil {
		data, err = os.ReadFile(f.path)
	}
	if err != nil {
		err = fmt.Errorf("revocation list: %w", err)
		if !first && !f.failing {
			f.log.Warn("revocation list unreadable; the last one read stays in force", "path", f.path, "err", err)
		}
		f.failing = true
		return err
	}
	if f.failing && !first {
		f.log.Info("revocation list readable again", "path", f.path)
	}
	f.failing = false
	list := map[string]struct{}{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		list[string(line)] = struct{}{}
	}
	if err := sc.Err(); err != nil { // a line over 64 KiB: not a list of identities
		f.failing = true
		return fmt.Errorf("revocation list %s: %w", f.path, err)
	}
	f.size, f.mtime = fi.Size(), fi.ModTime()
	f.list.Store(&list)
	f.gen.Add(1)
	if !first {
		f.log.Info("revocation list reloaded", "path", f.path, "identities", len(list))
	}
	return nil
}
