package cli

import (
	"os"
	"runtime/debug"
)

// SetGCPercent sets the garbage collector's target to percent unless GOGC
// is set: an explicit GOGC wins. GOMEMLIMIT, which the manifests set from
// each container's memory limit, still bounds the heap.
func SetGCPercent(percent int) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(percent)
	}
}
