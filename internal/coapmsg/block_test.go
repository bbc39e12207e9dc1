package coapmsg

import (
	"bytes"
	"testing"
)

// TestBlockValue: Block option values round-trip through AppendBlock and ParseBlock in their
// minimal length (RFC 7959 §2.2), a value longer than 3 bytes is refused, and BlockSZX picks the
// largest block size that fits.
func TestBlockValue(t *testing.T) {
	for _, c := range []struct {
		num  uint32
		more bool
		szx  uint8
		want []byte
	}{
		{0, false, 0, nil},
		{0, true, 6, []byte{0x0e}},
		{2, false, 6, []byte{0x26}},
		{15, true, 2, []byte{0xfa}},
		{16, false, 0, []byte{0x01, 0x00}},
		{MaxBlockNum, true, 7, []byte{0xff, 0xff, 0xff}},
	} {
		v := AppendBlock(nil, c.num, c.more, c.szx)
		if !bytes.Equal(v, c.want) {
			t.Errorf("AppendBlock(%d, %v, %d) = %x, want %x", c.num, c.more, c.szx, v, c.want)
		}
		num, more, szx, ok := ParseBlock(v)
		if !ok || num != c.num || more != c.more || szx != c.szx {
			t.Errorf("ParseBlock(%x) = %d %v %d %v", v, num, more, szx, ok)
		}
	}
	if _, _, _, ok := ParseBlock([]byte{0, 0, 0, 8}); ok {
		t.Error("a 4-byte Block value parsed")
	}
	for n, want := range map[int]uint8{0: 0, 16: 0, 31: 0, 32: 1, 100: 2, 1023: 5, 1024: 6, 4096: 6} {
		if got := BlockSZX(n); got != want {
			t.Errorf("BlockSZX(%d) = %d, want %d", n, got, want)
		}
	}
}

// TestOptionLen: OptionLen is the length AppendOption writes, across the extended-field bounds.
func TestOptionLen(t *testing.T) {
	for _, d := range []uint16{0, 12, 13, 268, 269, 1000} {
		for _, n := range []int{0, 12, 13, 268, 269, 1000} {
			if got, want := OptionLen(d, n), len(AppendOption(nil, d, make([]byte, n))); got != want {
				t.Errorf("OptionLen(%d, %d) = %d, AppendOption wrote %d", d, n, got, want)
			}
		}
	}
}
