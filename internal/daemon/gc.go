package daemon

import (
	"os"
	"runtime/debug"
)

// gcPercent is the daemon's GOGC unless the environment sets GOGC. At the
// default (100) the collector took 16–18 % of the daemon's CPU under
// issuance load; 200 gave about 15 % more certificates and renewals per
// second at c=64 for about 40 MiB more peak RSS (docs/benchmarks.md,
// "Issue 8 progress").
const gcPercent = 200

// tuneGC sets the collector's target for a long-running daemon whose live
// heap is small next to its allocation rate.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}
