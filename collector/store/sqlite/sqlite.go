// Package sqlite is the collector's embedded store: one SQLite file in WAL
// mode, through the pure-Go modernc.org/sqlite driver.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"os"

	"github.com/nodeward/nodeward/collector/store"
	"github.com/nodeward/nodeward/collector/store/sqlstore"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a SQLite-backed store.Store. Writes go through one connection
// (SQLite has one writer) and are group-committed; reads use a pool that
// WAL lets run beside it.
type Store struct {
	*sqlstore.Store
	path   string
	writer *sql.DB
}

var _ store.Store = (*Store)(nil)

// Dialect is SQLite's SQL.
var dialect = sqlstore.Dialect{Name: "sqlite", Greatest: "MAX", CommitWorkers: 1}

// Open opens or creates the SQLite file at path and brings its schema up to
// date. Durability: synchronous=FULL, so an acked commit survives power loss,
// not just a crash.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty path")
	}
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("sqlite %s: not a regular file", path)
	}
	dsn := func(extra string) string {
		q := url.Values{}
		for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(FULL)", "foreign_keys(1)"} {
			q.Add("_pragma", p)
		}
		if extra != "" {
			q.Add("_pragma", extra)
		}
		return "file:" + path + "?" + q.Encode()
	}
	// A big page cache for the writer: event indexes take inserts all over
	// their B-trees (a thousand nodes, many binaries).
	writer, err := sql.Open("sqlite", dsn("cache_size(-131072)")+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	writer.SetMaxOpenConns(1)
	s := &Store{path: path, writer: writer}
	if err := s.migrate(ctx); err != nil {
		_ = writer.Close()
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	reader, err := sql.Open("sqlite", dsn("query_only(1)")+"&_pragma=cache_size(-32768)")
	if err != nil {
		_ = writer.Close()
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	reader.SetMaxOpenConns(4)
	// A previous collector process may have died with streams open; an
	// SQLite file has one collector.
	if _, err := writer.ExecContext(ctx, `UPDATE nodes SET connected = 0 WHERE connected <> 0`); err != nil {
		_ = reader.Close()
		_ = writer.Close()
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	s.Store = sqlstore.New(dialect, writer, reader)
	return s, nil
}

// migrate applies, in order and each in its own transaction, the embedded
// migrations the file has not seen yet.
func (s *Store) migrate(ctx context.Context) error {
	return sqlstore.Migrate(ctx, s.writer, migrations, false)
}
