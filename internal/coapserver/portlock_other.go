//go:build !linux

package coapserver

// lockPort does nothing elsewhere than Linux: there is no abstract unix socket namespace, and a
// lock file would outlive a crashed gateway. SO_REUSEPORT is not set there either (setSockopts),
// so a second gateway's bind fails with EADDRINUSE.
func lockPort(port uint16) (release func(), err error) { return func() {}, nil }
