package coapmsg

// Block-wise transfer (RFC 7959) and Request-Tag (RFC 9175): the codes and options, and the
// Block1/Block2 option value: NUM (block number, up to 20 bits), M (more blocks follow) and SZX
// (block size 2^(SZX+4) bytes, 16 to 1024; 7 is reserved over UDP).
const (
	Continue                Code = 2<<5 | 31 // 2.31
	RequestEntityIncomplete Code = 4<<5 | 8  // 4.08

	RequestTag uint16 = 292 // RFC 9175, elective and repeatable
)

// MaxBlockNum is the largest block number a 3-byte Block option carries.
const MaxBlockNum = 1<<20 - 1

// BlockValue packs a Block1 or Block2 option value: NUM, M and SZX as a uint (RFC 7959 §2.2).
// num must be at most MaxBlockNum and szx at most 7.
func BlockValue(num uint32, more bool, szx uint8) uint32 {
	v := num<<4 | uint32(szx&7)
	if more {
		v |= 8
	}
	return v
}

// AppendBlock appends the option value BlockValue(num, more, szx), 0 to 3 bytes.
func AppendBlock(b []byte, num uint32, more bool, szx uint8) []byte {
	return AppendUint(b, BlockValue(num, more, szx))
}

// ParseBlock decodes a Block1 or Block2 option value; ok is false for one longer than 3 bytes.
func ParseBlock(val []byte) (num uint32, more bool, szx uint8, ok bool) {
	if len(val) > 3 {
		return 0, false, 0, false
	}
	v, _ := Uint(val)
	return v >> 4, v&8 != 0, uint8(v & 7), true
}

// BlockSZX is the SZX of a block size in bytes: the largest whose size is at most n, 0 (16 bytes)
// for n below 32 and 6 (1024 bytes) for n of 1024 or more.
func BlockSZX(n int) uint8 {
	var szx uint8
	for szx < 6 && 1<<(szx+5) <= n {
		szx++
	}
	return szx
}
