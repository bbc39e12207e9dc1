package main

import (
	"runtime/debug"

	"github.com/coapgw/coapgw/internal/gateway"
)

// The version comes from the build: `make build` and the Dockerfile set gateway.Version with
// -ldflags "-X github.com/coapgw/coapgw/internal/gateway.Version=$(git describe ...)". A plain
// `go build` or `go run` leaves it "dev"; then the VCS revision Go records in the binary names
// the build (devel+<12 hex digits>, "+dirty" for uncommitted changes), when there is one.
func init() {
	if gateway.Version == "dev" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			gateway.Version = versionFromBuildInfo(bi)
		}
	}
}

// versionFromBuildInfo names a build without an -ldflags version: the module version when the
// binary was built from a tagged module (go install ...@v0.5.0), else the VCS revision, else "dev".
func versionFromBuildInfo(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return "devel+" + rev + dirty
}
