//go:build race

package coapmsg

const raceEnabled = true
