// Package buildinfo carries the version stamped into both binaries at link time.
package buildinfo

import "runtime/debug"

// version is set with -ldflags "-X github.com/nodeward/nodeward/internal/buildinfo.version=...".
var version = ""

// Version returns the release version, or the module version and VCS revision
// the Go toolchain recorded, or "dev".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return "dev"
}
