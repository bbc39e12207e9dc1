package spool

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The incarnation file holds 16 lower-case hex digits (64 random bits) naming one life of a spool
// directory: written when Open finds none, kept across restarts, gone with the directory. A spool
// directory deleted or replaced (a new instance's volume) gets a new one, even where the gateway id
// and the sequence numbers repeat an earlier spool's; the FIFO queue's deduplication id includes it.
const (
	incarnationFile    = "incarnation"
	incarnationTmpFile = "incarnation.tmp"
	incarnationLen     = 16
)

// Incarnation returns the spool directory's incarnation: the same across restarts of one
// directory, different for a directory that was deleted or replaced. Together with the gateway id
// and a sequence number it names a record that no other spool can have named.
func (d *Disk) Incarnation() string { return d.incarnation }

// Incarnation returns a random incarnation, one per Memory log.
func (l *Memory) Incarnation() string { return l.incarnation }

func newIncarnation() string {
	var b [incarnationLen / 2]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

func validIncarnation(s string) bool {
	if len(s) != incarnationLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && (s[i] < 'a' || s[i] > 'f') {
			return false
		}
	}
	return true
}

// loadIncarnation reads dir's incarnation, or makes one and writes it (atomically and durably:
// tmp file, fsync, rename, fsync of the directory) when there is none or it is damaged. If it
// cannot be written, the spool runs with an incarnation kept in memory only, and a warning: its
// records redelivered after a restart then get new deduplication ids, so the FIFO queue may take
// them twice (a duplicate the processor's merge rules make harmless, as for any resent record).
func (d *Disk) loadIncarnation() string {
	path := filepath.Join(d.dir, incarnationFile)
	b, err := os.ReadFile(path)
	if err == nil && validIncarnation(string(b)) {
		return string(b)
	}
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		d.log.Warn("damaged or unreadable incarnation file; starting a new incarnation", "file", incarnationFile, "err", err)
	}
	inc := newIncarnation()
	if err := d.writeIncarnation(inc); err != nil {
		d.log.Warn("cannot persist the spool's incarnation; it lasts until the next restart", "err", err)
	}
	return inc
}

func (d *Disk) writeIncarnation(inc string) error {
	tmp := filepath.Join(d.dir, incarnationTmpFile)
	f, err := d.fs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("write incarnation: %w", err)
	}
	_, err = f.WriteAt([]byte(inc), 0)
	if err == nil && !d.opts.NoSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = d.fs.Rename(tmp, filepath.Join(d.dir, incarnationFile))
	}
	if err == nil && !d.opts.NoSync {
		err = d.fs.SyncDir(d.dir)
	}
	if err != nil {
		return fmt.Errorf("write incarnation: %w", err)
	}
	return nil
}
