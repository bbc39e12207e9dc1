package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
)

// The cursor file records what has been delivered and a floor for sequence numbers, so that they are
// never reused even after every segment has been deleted. Layout, little endian, 28 bytes:
//
//	[0:4]   magic "SPCR"
//	[4:8]   version (1)
//	[8:16]  committed: every entry with Seq <= committed is delivered
//	[16:24] floor: the next sequence number must be at least this
//	[24:28] CRC32C of [0:24]
//
// It is replaced atomically: write cursor.tmp, fsync, rename over cursor, fsync the directory.
const (
	cursorFile    = "cursor"
	cursorTmpFile = "cursor.tmp"
	cursorSize    = 28
	cursorVersion = 1
)

var cursorMagic = [4]byte{'S', 'P', 'C', 'R'}

type cursorState struct {
	committed uint64
	floor     uint64
}

var errCorruptCursor = errors.New("corrupt cursor file")

func encodeCursor(c cursorState) []byte {
	b := make([]byte, cursorSize)
	copy(b, cursorMagic[:])
	binary.LittleEndian.PutUint32(b[4:8], cursorVersion)
	binary.LittleEndian.PutUint64(b[8:16], c.committed)
	binary.LittleEndian.PutUint64(b[16:24], c.floor)
	binary.LittleEndian.PutUint32(b[24:28], crc32.Checksum(b[:24], castagnoli))
	return b
}

func decodeCursor(b []byte) (cursorState, error) {
	if len(b) != cursorSize || [4]byte(b[0:4]) != cursorMagic ||
		binary.LittleEndian.Uint32(b[4:8]) != cursorVersion ||
		binary.LittleEndian.Uint32(b[24:28]) != crc32.Checksum(b[:24], castagnoli) {
		return cursorState{}, errCorruptCursor
	}
	return cursorState{
		committed: binary.LittleEndian.Uint64(b[8:16]),
		floor:     binary.LittleEndian.Uint64(b[16:24]),
	}, nil
}

// readCursor reads dir's cursor. A missing cursor is the zero cursor; a damaged one is
// errCorruptCursor.
func readCursor(dir string) (cursorState, error) {
	b, err := os.ReadFile(filepath.Join(dir, cursorFile))
	if errors.Is(err, fs.ErrNotExist) {
		return cursorState{}, nil
	}
	if err != nil {
		return cursorState{}, fmt.Errorf("read cursor: %w", err)
	}
	return decodeCursor(b)
}

// writeCursor replaces dir's cursor atomically and durably.
func writeCursor(fsys fileSystem, dir string, c cursorState, noSync bool) error {
	tmp := filepath.Join(dir, cursorTmpFile)
	f, err := fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("write cursor: %w", err)
	}
	_, err = f.WriteAt(encodeCursor(c), 0)
	if err == nil && !noSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, filepath.Join(dir, cursorFile))
	}
	if err == nil && !noSync {
		err = fsys.SyncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("write cursor: %w", err)
	}
	return nil
}
