//go:build !race

package dtlsrecord

const raceEnabled = false
