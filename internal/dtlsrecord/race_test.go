//go:build race

package dtlsrecord

// raceEnabled: the race detector changes what allocates, so allocation counts are not checked.
const raceEnabled = true
