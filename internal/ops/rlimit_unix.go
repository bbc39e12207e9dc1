//go:build unix

package ops

import "syscall"

// fdLimit is the soft RLIMIT_NOFILE (0 when unknown). Go raises the soft limit to the hard one
// at start, so this is what the process may open.
func fdLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return uint64(rl.Cur)
}
