// Package sqlite is the collector's embedded store: one SQLite file in WAL
// mode, through SQLite's C library (github.com/mattn/go-sqlite3) when built
// with cgo, else its pure-Go translation (modernc.org/sqlite).
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/nodeward/nodeward/collector/store"
	"github.com/nodeward/nodeward/collector/store/sqlstore"
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
	hooks  *eventHooks // the C build's event writer; nil in the pure-Go build
}

var _ store.Store = (*Store)(nil)

// Dialect is SQLite's SQL.
var dialect = sqlstore.Dialect{Name: "sqlite", Greatest: "MAX", InsertEvents: "INSERT OR FAIL", CommitWorkers: 1}

// Open opens or creates the SQLite file at path and brings its schema up to
// date. Durability: an acked commit survives power loss, not just a crash
// (synchronous=FULL; the event writer's commits are flushed before their
// acks). log (nil: slog.Default()) hears of failed checkpoints.
func Open(ctx context.Context, path string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.Default()
	}
	if path == "" {
		return nil, errors.New("sqlite: empty path")
	}
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("sqlite %s: not a regular file", path)
	}
	common := []string{"busy_timeout=10000", "journal_mode=WAL", "synchronous=FULL", "foreign_keys=1"}
	// A big page cache for the writers: event indexes take inserts all over
	// their B-trees (a thousand nodes, many binaries). Statement journals
	// (an upsert's undo copy of the pages it touches) stay in memory.
	writerPragmas := slices.Concat(common, []string{"cache_size=-131072", "temp_store=MEMORY", "wal_autocheckpoint=0"})
	writer := openDB(path, true, writerPragmas...)
	writer.SetMaxOpenConns(1)
	s := &Store{path: path, writer: writer}
	if err := s.migrate(ctx); err != nil {
		_ = writer.Close()
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	// A previous collector process may have died with streams open; an
	// SQLite file has one collector.
	if _, err := writer.ExecContext(ctx, `UPDATE nodes SET connected = 0 WHERE connected <> 0`); err != nil {
		_ = writer.Close()
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	// Event batches, most of what is written, go through a connection of
	// their own in the C build (eventwriter_cgo.go); the group commit keeps
	// the two from writing at once.
	hooks, err := eventWriterFor(path, writerPragmas)
	if err != nil {
		_ = writer.Close()
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	s.hooks = hooks
	d := dialect
	reader := openDB(path, false, slices.Concat(common, []string{"query_only=1", "cache_size=-32768"})...)
	reader.SetMaxOpenConns(4)
	// Checkpoints run beside the writer, not in it: SQLite's automatic
	// checkpoint copies WAL pages into the database file and syncs it inside
	// the commit that crossed the threshold, so that commit's acks waited
	// for random writes all over a large file.
	ckpt := openDB(path, false, common...)
	ckpt.SetMaxOpenConns(1)
	restart := func(ctx context.Context) error {
		_, _, err := checkpoint(ctx, ckpt, "RESTART")
		return err
	}
	if hooks != nil {
		d.WriteEvents = hooks.write
		d.Flush = hooks.flush
		restart = func(context.Context) error { hooks.restart(); return nil }
	}
	ckptCtx, stopCkpt := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		checkpointLoop(ckptCtx, ckpt, restart, func(err error) { log.Warn("sqlite checkpoint failed", "path", path, "err", err) })
	}()
	// Closed last, the checkpointer's connection makes SQLite's final
	// checkpoint and removes the WAL.
	s.Store = sqlstore.New(d, writer, reader, func() error {
		var err error
		if hooks != nil {
			err = hooks.close()
		}
		stopCkpt()
		<-done
		return errors.Join(err, ckpt.Close())
	})
	log.Info("sqlite store open", "path", path, "engine", engine)
	return s, nil
}

// checkpointInterval is how often the WAL is copied into the database file.
const checkpointInterval = time.Second

// walRestartFrames is the WAL length (in pages) past which it is rewound. A
// passive checkpoint never catches up with a busy writer, so the WAL would
// only grow; a restarting one waits for the current transaction, copies the
// few pages the passive one left, and lets the next transaction write from
// the start of the file again.
const walRestartFrames = 16384

// restartLeftover is how many pages a rewind may still have to copy while
// the writer waits.
const restartLeftover = 256

// restartRounds bounds the passive rounds run to bring the WAL's uncopied
// tail down to restartLeftover before a rewind.
const restartRounds = 8

// eventHooks are what the C build's event writer offers the store: write
// commits a group of event batches, flush makes its commits durable
// (fdatasync of the WAL), restart has it rewind the WAL right before its
// next group (a checkpoint from another connection waited for the writer
// and then held it off, with SQLite's sleeps of up to 100 ms on both
// sides: stalls of 100-600 ms every second or two at 50,000 events/s).
type eventHooks struct {
	write   func(context.Context, []*store.Request) error
	flush   func() error
	restart func()
	close   func() error
}

// checkpoint runs one checkpoint in mode and reports the WAL's length and
// how much of it is now in the database file, in pages.
func checkpoint(ctx context.Context, db *sql.DB, mode string) (frames, copied int64, err error) {
	var busy int64
	err = db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(`+mode+`)`).Scan(&busy, &frames, &copied)
	return frames, copied, err
}

// checkpointLoop runs passive checkpoints (they never block the writer or
// readers), and has restart rewind the WAL when it is long, until ctx ends.
func checkpointLoop(ctx context.Context, db *sql.DB, restart func(context.Context) error, log func(error)) {
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		frames, copied, err := checkpoint(ctx, db, "PASSIVE")
		if err == nil && frames > walRestartFrames {
			// The restart holds the writer off while it copies what is left,
			// so first let passive rounds bring that down to a few pages. A
			// round copies the WAL as it was when the round began, and the
			// writer adds to it meanwhile (thousands of pages during a round
			// of a second's WAL, which the rewind had then copied with the
			// writer waiting, 100-170 ms at 50,000 events/s): rounds repeat
			// until one finds few new pages, so the one before it was short.
			for range restartRounds {
				before := copied
				if frames, copied, err = checkpoint(ctx, db, "PASSIVE"); err != nil || frames-before <= restartLeftover {
					break
				}
			}
			if err == nil {
				err = restart(ctx)
			}
		}
		// A failure only leaves the WAL longer until the next round.
		if err != nil && ctx.Err() == nil {
			log(err)
		}
	}
}

// migrate applies, in order and each in its own transaction, the embedded
// migrations the file has not seen yet.
func (s *Store) migrate(ctx context.Context) error {
	return sqlstore.Migrate(ctx, s.writer, migrations, false)
}
