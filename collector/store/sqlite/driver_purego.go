//go:build !cgo

package sqlite

import (
	"database/sql/driver"

	"modernc.org/sqlite"
)

// engine is the pure-Go translation of SQLite, for builds without a C
// compiler (CGO_ENABLED=0): the same file format and SQL, slower at
// ingest (docs/BENCHMARKS.md).
const engine = "sqlite (pure Go)"

func newDriver() driver.Driver { return &sqlite.Driver{} }

// eventWriterFor has nothing to open: the pure-Go build commits events
// through database/sql like everything else.
func eventWriterFor(string, []string) (*eventHooks, error) { return nil, nil }
