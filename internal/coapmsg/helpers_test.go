package coapmsg

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"unsafe"
)

// hx parses hex with optional spaces/newlines, e.g. hx("40 01 7d34").
func hx(s string) []byte {
	s = strings.Join(strings.Fields(s), "")
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// cat concatenates byte slices and strings into a fresh slice.
func cat(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case []byte:
			b = append(b, v...)
		case string:
			b = append(b, v...)
		case byte:
			b = append(b, v)
		case int:
			b = append(b, byte(v))
		case rune:
			b = append(b, byte(v))
		default:
			panic("cat: bad part")
		}
	}
	return b
}

func rep(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }

// errKind classifies a Decode error.
type errKind int

const (
	kindOK errKind = iota
	kindShort
	kindVersion
	kindFormat
	kindOther
)

func (k errKind) String() string {
	return [...]string{"ok", "ErrShort", "ErrVersion", "*FormatError", "other"}[k]
}

func kindOf(err error) errKind {
	var fe *FormatError
	switch {
	case err == nil:
		return kindOK
	case errors.Is(err, ErrShort):
		return kindShort
	case errors.Is(err, ErrVersion):
		return kindVersion
	case errors.As(err, &fe):
		if fe.Reason == "" {
			return kindOther
		}
		return kindFormat
	}
	return kindOther
}

// expectedKind is the error class RFC 7252 §3 / the package contract dictates from the fixed
// header alone, when the rest does not matter: short → ErrShort, version ≠ 1 → ErrVersion.
// For anything else it returns kindOK meaning "ok or format error".
func headerKind(data []byte) errKind {
	if len(data) < 4 {
		return kindShort
	}
	if data[0]>>6 != 1 {
		return kindVersion
	}
	return kindOK
}

func eqMsg(a, b *Message) bool {
	if a.Type != b.Type || a.Code != b.Code || a.MID != b.MID ||
		!bytes.Equal(a.Token, b.Token) || !bytes.Equal(a.Payload, b.Payload) ||
		len(a.Options) != len(b.Options) {
		return false
	}
	for i := range a.Options {
		if a.Options[i].Number != b.Options[i].Number || !bytes.Equal(a.Options[i].Value, b.Options[i].Value) {
			return false
		}
	}
	return true
}

func within(data, sub []byte) bool {
	if len(sub) == 0 {
		return true
	}
	if len(data) == 0 {
		return false
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(data)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(sub)))
	return p >= base && p+uintptr(len(sub)) <= base+uintptr(len(data))
}

// checkDecoded verifies the structural invariants of a successfully decoded message.
func checkDecoded(t testing.TB, data []byte, m *Message) {
	t.Helper()
	if len(m.Token) > MaxTokenLen {
		t.Fatalf("token of %d bytes", len(m.Token))
	}
	if m.Type > Reset {
		t.Fatalf("type %d", m.Type)
	}
	if !within(data, m.Token) || !within(data, m.Payload) {
		t.Fatalf("token or payload outside the datagram")
	}
	if m.Payload != nil && len(m.Payload) == 0 {
		t.Fatalf("empty non-nil payload")
	}
	for i, o := range m.Options {
		if !within(data, o.Value) {
			t.Fatalf("option %d (#%d) value outside the datagram", o.Number, i)
		}
		if cap(o.Value) != len(o.Value) {
			t.Fatalf("option %d value has cap %d > len %d: appending to it would clobber the datagram", o.Number, cap(o.Value), len(o.Value))
		}
		if i > 0 && o.Number < m.Options[i-1].Number {
			t.Fatalf("options not sorted: %d after %d", o.Number, m.Options[i-1].Number)
		}
	}
	if m.Code == Empty && (len(m.Token) != 0 || len(m.Options) != 0 || len(m.Payload) != 0 || len(data) != 4) {
		t.Fatalf("empty message decoded with token/options/payload")
	}
}
