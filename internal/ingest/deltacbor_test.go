package ingest

import (
	"encoding/hex"
	"testing"
)

// TestDeltaCBOR: a delta message in CBOR, deterministically: integers as integers, other
// numbers as floats in their shortest exact width, objects, arrays, strings and booleans kept.
func TestDeltaCBOR(t *testing.T) {
	for _, c := range []struct{ json, cbor string }{
		// {"state": {"interval": 60}, "version": 7}
		{`{"state":{"interval":60},"version":7}`, "a2657374617465a168696e74657276616c183c6776657273696f6e07"},
		// {"state": {"a": [1, 2.25 (half float 4080)], "n": -2, "t": 1.5 (3e00), "fw": {"ch": "beta"},
		// "on": true}, "version": 300}: keys in deterministic order (shorter first).
		{`{"state":{"t":1.5,"n":-2,"on":true,"fw":{"ch":"beta"},"a":[1,2.25]},"version":300}`,
			"a2657374617465a561618201f94080616e216174f93e00626677a16263686462657461626f6ef56776657273696f6e19012c"},
	} {
		got, err := deltaCBOR([]byte(c.json))
		if err != nil {
			t.Fatalf("%s: %v", c.json, err)
		}
		if hex.EncodeToString(got) != c.cbor {
			t.Errorf("%s: %x, want %s", c.json, got, c.cbor)
		}
	}
	if _, err := deltaCBOR([]byte(`{"state":`)); err == nil {
		t.Error("a cut message was rendered")
	}
}
