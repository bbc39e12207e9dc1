package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const segmentSuffix = ".seg"

// segmentName is the file name of the segment whose first possible sequence number is first.
func segmentName(first uint64) string { return fmt.Sprintf("%020d%s", first, segmentSuffix) }

func segmentPath(dir string, first uint64) string { return filepath.Join(dir, segmentName(first)) }

// parseSegmentName is the inverse of segmentName.
func parseSegmentName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, segmentSuffix)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || n == 0 {
		return 0, false
	}
	return n, true
}

// listSegments returns the first sequence numbers of the segment files in dir, ascending.
func listSegments(dir string) ([]uint64, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var firsts []uint64
	for _, de := range des {
		if n, ok := parseSegmentName(de.Name()); ok && de.Type().IsRegular() {
			firsts = append(firsts, n)
		}
	}
	slices.Sort(firsts)
	return firsts, nil
}

// segment is the in-memory description of one segment file.
type segment struct {
	first uint64 // from the file name: no frame in it has a lower sequence number
	size  int64  // bytes that are durable and may be read
	last  uint64 // sequence number of the last valid frame, 0 if none
	// skips maps the start of each corrupt region found on open to its end. Never modified after
	// open, so readers may use it without a lock.
	skips map[int64]int64
}

// scanSegmentFile reads and decodes one segment file. See decodeSegment.
func scanSegmentFile(dir string, first, next uint64, fn func(seq uint64, data []byte, off int64)) (decoded, int64, error) {
	b, err := os.ReadFile(segmentPath(dir, first))
	if err != nil {
		return decoded{}, 0, fmt.Errorf("read segment %d: %w", first, err)
	}
	return decodeSegment(b, first, next, fn), int64(len(b)), nil
}
