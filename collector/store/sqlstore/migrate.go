package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Conn is what Migrate runs on: a *sql.DB, or a *sql.Conn holding a lock.
type Conn interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// Migrate applies, in order and each in its own transaction, the files in
// fsys's "migrations" directory (named VERSION_what.sql) that the database
// has not recorded in schema_migrations yet. A database whose schema is newer
// than every file is refused: an older collector must not write to it.
// numbered says the driver wants $1 placeholders rather than ?.
func Migrate(ctx context.Context, c Conn, fsys fs.FS, numbered bool) error {
	if _, err := c.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ns BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	var current int
	if err := c.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("schema version: %w", err)
	}
	entries, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	record := `INSERT INTO schema_migrations (version, applied_ns) VALUES (?, ?)`
	if numbered {
		record = `INSERT INTO schema_migrations (version, applied_ns) VALUES ($1, $2)`
	}
	newest := 0
	for _, e := range entries {
		v, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: bad name: %w", e.Name(), err)
		}
		newest = v
		if v <= current {
			continue
		}
		body, err := fs.ReadFile(fsys, path.Join("migrations", e.Name()))
		if err != nil {
			return err
		}
		if err := apply(ctx, c, v, string(body), record); err != nil {
			return err
		}
		current = v
	}
	if current > newest {
		return fmt.Errorf("schema version %d is newer than this collector knows (%d): upgrade the collector", current, newest)
	}
	return nil
}

// apply runs one migration and records it, atomically.
func apply(ctx context.Context, c Conn, version int, body, record string) error {
	tx, err := c.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migration %d: %w", version, err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, body); err != nil {
		return fmt.Errorf("migration %d: %w", version, err)
	}
	if _, err := tx.ExecContext(ctx, record, version, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("migration %d: %w", version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migration %d: %w", version, err)
	}
	return nil
}
