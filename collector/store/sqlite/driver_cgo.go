//go:build cgo

package sqlite

import (
	"database/sql/driver"

	"github.com/mattn/go-sqlite3"
)

// engine is SQLite's own C library, compiled in through cgo. At saturation
// the single writer bounds ingest; the C library costs less CPU per row
// than the pure-Go translation and runs in the calling thread outside the
// Go scheduler's turns: 15-18% more events/s (docs/BENCHMARKS.md).
const engine = "sqlite (C, cgo)"

func newDriver() driver.Driver { return &sqlite3.SQLiteDriver{} }
