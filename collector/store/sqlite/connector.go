package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
)

// connector opens connections to one SQLite file through the driver this
// build links in and sets its pragmas on each one, so the store is written
// the same way whichever driver that is.
type connector struct {
	drv     driver.Driver
	dsn     string
	pragmas []string
}

func (c connector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	ex, ok := conn.(driver.ExecerContext)
	if !ok {
		_ = conn.Close()
		return nil, errors.New("sqlite driver cannot execute statements")
	}
	for _, p := range c.pragmas {
		if _, err := ex.ExecContext(ctx, "PRAGMA "+p, nil); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("PRAGMA %s: %w", p, err)
		}
	}
	return conn, nil
}

func (c connector) Driver() driver.Driver { return c.drv }

// openDB returns a pool of connections to the file at path, each with
// pragmas set. immediate makes every transaction take the write lock at
// BEGIN, so a writer never fails to upgrade a read lock halfway through.
func openDB(path string, immediate bool, pragmas ...string) *sql.DB {
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath()
	if immediate {
		dsn += "?_txlock=immediate"
	}
	return sql.OpenDB(connector{drv: newDriver(), dsn: dsn, pragmas: pragmas})
}
