//go:build race

package coapserver

const raceEnabled = true
