package spool

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(killChildEnv); dir != "" {
		killChild(dir) // never returns: the parent test kills this process
	}
	goleak.VerifyTestMain(m)
}
