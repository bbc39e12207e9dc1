//go:build !race

package coapserver

const raceEnabled = false
