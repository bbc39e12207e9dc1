package loadgen

import "testing"

// TestDefaultNamesLeaveREADMEDevicesAlone: a default fleet's thing names (the second path
// segment; a thing has one type) never take the README's example devices, sensor/dev-1 and its
// neighbours. With dev-<n> they did, and a bench run after the README's first message had every
// record of bench/dev-1 set aside for its type.
func TestDefaultNamesLeaveREADMEDevicesAlone(t *testing.T) {
	cfg := DefaultConfig()
	readme := map[string]bool{}
	for _, n := range []string{"dev-1", "dev-2", "dev-3"} {
		readme[n] = true
	}
	for g := 0; g < 100000; g++ {
		id := cfg.identity(g)
		if readme[id[len(cfg.Type)+1:]] {
			t.Fatalf("default device %d is %s, the name of a README device", g, id)
		}
	}
}
