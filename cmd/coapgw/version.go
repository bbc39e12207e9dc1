package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/coapgw/coapgw/internal/gateway"
)

// The version comes from the build: `make build` and the Dockerfile set gateway.Version with
// -ldflags "-X github.com/coapgw/coapgw/internal/gateway.Version=$(git describe ...)". A plain
// `go build` or `go run` leaves it "dev"; then the VCS revision Go records in the binary names
// the build (devel+<12 hex digits>, "+dirty" for uncommitted changes), when there is one.
// The commit likewise: -X .../gateway.Commit=$(git rev-parse HEAD), else Go's vcs.revision.
func init() {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	if gateway.Version == "dev" {
		gateway.Version = versionFromBuildInfo(bi)
	}
	if gateway.Commit == "" {
		gateway.Commit = commitFromBuildInfo(bi)
	}
}

// printVersion is `coapgw version`: the version line --version prints, then the commit and the
// Go toolchain that built the binary (the labels of coapgw_build_info).
func printVersion(w io.Writer) {
	commit := gateway.Commit
	if commit == "" {
		commit = "unknown"
	}
	fmt.Fprintf(w, "coapgw %s\ncommit %s\ngo %s %s/%s\n", gateway.Version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// commitFromBuildInfo is the VCS revision Go recorded ("" when built outside a checkout), with
// "-dirty" for uncommitted changes.
func commitFromBuildInfo(bi *debug.BuildInfo) string {
	rev, modified := vcsRevision(bi)
	if rev != "" && modified {
		rev += "-dirty"
	}
	return rev
}

// versionFromBuildInfo names a build without an -ldflags version: the module version when the
// binary was built from a tagged module (go install ...@v0.5.0), else the VCS revision, else "dev".
func versionFromBuildInfo(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, modified := vcsRevision(bi)
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified {
		rev += "+dirty"
	}
	return "devel+" + rev
}

// vcsRevision is the commit Go's toolchain recorded in the binary and whether the work tree had
// uncommitted changes.
func vcsRevision(bi *debug.BuildInfo) (rev string, modified bool) {
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	return rev, modified
}
