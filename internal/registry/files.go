package registry

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// privateFiles makes the registry's data files readable and writable by their owner only: the
// database holds device credentials (sealed, but still nobody else's business). It creates the
// database file with mode 0600 if it does not exist, so that SQLite, which gives the WAL and
// SHM files the mode of the database file, creates those 0600 too; and it narrows the mode of
// files that already exist (made by an older version, or by hand).
func privateFiles(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, fi.Mode().Perm()&0o700); err != nil {
				return fmt.Errorf("restrict mode: %w", err)
			}
		}
	}
	return nil
}
