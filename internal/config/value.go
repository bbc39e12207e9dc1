package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Size is a number of bytes. It parses plain bytes ("1048576") or a number with a unit: binary
// KiB, MiB, GiB, TiB (powers of 1024) or decimal kB/KB, MB, GB, TB (powers of 1000), B for
// bytes; units are not case-sensitive and a space before them is allowed. It prints in the
// largest binary unit that is exact ("1GiB", "8KiB", "1000").
type Size int64

// Binary size units.
const (
	KiB Size = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
)

var sizeUnits = []struct {
	suffix string
	mult   Size
}{
	{"kib", KiB}, {"mib", MiB}, {"gib", GiB}, {"tib", TiB},
	{"kb", 1000}, {"mb", 1000 * 1000}, {"gb", 1000 * 1000 * 1000}, {"tb", 1000 * 1000 * 1000 * 1000},
	{"b", 1},
}

// ParseSize parses a size such as "64MiB", "8KiB", "1GB" or "4096".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	num, mult := t, Size(1)
	lower := strings.ToLower(t)
	for _, u := range sizeUnits {
		if strings.HasSuffix(lower, u.suffix) {
			num, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size like 8MiB, 64KiB or 4096 (bytes)", s)
	}
	if n > math.MaxInt64/int64(mult) {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(n) * mult, nil
}

func (s Size) String() string {
	for _, u := range []struct {
		name string
		mult Size
	}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if s != 0 && s%u.mult == 0 {
			return strconv.FormatInt(int64(s/u.mult), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// value adapts a typed field pointer to flag.Value.
type value struct{ p any }

func (v *value) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	switch p := v.p.(type) {
	case *string:
		return *p
	case *int:
		return strconv.Itoa(*p)
	case *bool:
		return strconv.FormatBool(*p)
	case *time.Duration:
		return p.String()
	case *Size:
		return p.String()
	}
	return ""
}

// IsBoolFlag lets a boolean setting be given as a bare --flag.
func (v *value) IsBoolFlag() bool { _, ok := v.p.(*bool); return ok }

func (v *value) Set(s string) error { return set(v.p, s) }

func set(p any, s string) error {
	switch p := p.(type) {
	case *string:
		*p = s
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		*p = n
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		*p = b
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not a duration like 5s", s)
		}
		*p = d
	case *Size:
		n, err := ParseSize(s)
		if err != nil {
			return err
		}
		*p = n
	}
	return nil
}

func copyValue(dst, src any) {
	switch d := dst.(type) {
	case *string:
		*d = *src.(*string)
	case *int:
		*d = *src.(*int)
	case *bool:
		*d = *src.(*bool)
	case *time.Duration:
		*d = *src.(*time.Duration)
	case *Size:
		*d = *src.(*Size)
	}
}
