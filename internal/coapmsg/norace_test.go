//go:build !race

package coapmsg

const raceEnabled = false
