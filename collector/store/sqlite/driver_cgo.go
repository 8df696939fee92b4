//go:build cgo

package sqlite

import (
	"database/sql/driver"

	"github.com/mattn/go-sqlite3"
)

// engine is SQLite's own C library, compiled in through cgo: at saturation
// the single writer is ingest's bottleneck, and the C library commits the
// same rows with about a fifth less CPU than the pure-Go translation, in a
// thread of its own outside the Go scheduler's turns (docs/BENCHMARKS.md).
const engine = "sqlite (C, cgo)"

func newDriver() driver.Driver { return &sqlite3.SQLiteDriver{} }
