package record

// MaxNameLen is the longest thing or thing type name AWS IoT accepts.
const MaxNameLen = 128

// NamePattern is the rule ValidName checks, for messages.
const NamePattern = "^[a-zA-Z0-9:_-]{1,128}$"

// ValidName reports whether name is a valid AWS IoT thing or thing type name: 1 to 128 bytes of
// ASCII letters, digits, ':', '_' and '-' (NamePattern). Every name a record carries passes it;
// ingest checks it on the device's request, the processor on the record, the HTTP API on its
// parameters. It takes a string or a []byte without converting (no allocation).
func ValidName[T string | []byte](name T) bool {
	if len(name) == 0 || len(name) > MaxNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !nameByte[name[i]] {
			return false
		}
	}
	return true
}

var nameByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t[':'], t['_'], t['-'] = true, true, true
	return t
}()
