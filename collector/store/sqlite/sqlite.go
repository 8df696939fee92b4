// Package sqlite is the collector's embedded store: one SQLite file in WAL
// mode, through the pure-Go modernc.org/sqlite driver.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nodeward/nodeward/collector/store"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a SQLite-backed store.Store. Writes go through one connection
// (SQLite has one writer); reads use a pool that WAL lets run beside it.
type Store struct {
	path   string
	writer *sql.DB
	reader *sql.DB
}

var _ store.Store = (*Store)(nil)

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
	writer, err := sql.Open("sqlite", dsn("")+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	writer.SetMaxOpenConns(1)
	s := &Store{path: path, writer: writer}
	if err := s.migrate(ctx); err != nil {
		_ = writer.Close()
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	reader, err := sql.Open("sqlite", dsn("query_only(1)"))
	if err != nil {
		_ = writer.Close()
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	reader.SetMaxOpenConns(4)
	s.reader = reader
	// A previous collector process may have died with streams open.
	if _, err := writer.ExecContext(ctx, `UPDATE nodes SET connected = 0 WHERE connected <> 0`); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	return s, nil
}

// migrate applies, in order and each in its own transaction, the embedded
// migrations the file has not seen yet.
func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.writer.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_ns INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	var current int
	if err := s.writer.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("schema version: %w", err)
	}
	entries, err := fs.ReadDir(migrations, "migrations")
	if err != nil {
		return err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
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
		body, err := migrations.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return err
		}
		tx, err := s.writer.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migration %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("migration %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_ns) VALUES (?, ?)`, v, time.Now().UnixNano()); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("migration %d: %w", v, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %d: %w", v, err)
		}
		current = v
	}
	if current > newest {
		return fmt.Errorf("schema version %d is newer than this collector knows (%d): upgrade the collector", current, newest)
	}
	return nil
}

// Close closes both pools.
func (s *Store) Close() error {
	var errs []error
	if s.reader != nil {
		errs = append(errs, s.reader.Close())
	}
	errs = append(errs, s.writer.Close())
	return errors.Join(errs...)
}

// commit runs fn in a write transaction after claiming (node, seq); a
// sequence already claimed is reported as a duplicate and fn is not run.
func (s *Store) commit(ctx context.Context, node string, seq uint64, kind string, received time.Time, fn func(*sql.Tx) error) (bool, error) {
	if node == "" || seq == 0 {
		return false, fmt.Errorf("commit %s: node and sequence are required", kind)
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("commit %s: %w", kind, err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := tx.ExecContext(ctx, `INSERT INTO sequences (node, seq, kind, received_ns) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		node, int64(seq), kind, received.UnixNano())
	if err != nil {
		return false, fmt.Errorf("commit %s: %w", kind, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return true, nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO nodes (name, last_seen_ns, last_sequence) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET last_seen_ns = MAX(last_seen_ns, excluded.last_seen_ns),
		last_sequence = MAX(last_sequence, excluded.last_sequence)`, node, received.UnixNano(), int64(seq)); err != nil {
		return false, fmt.Errorf("commit %s: node: %w", kind, err)
	}
	if err := fn(tx); err != nil {
		return false, fmt.Errorf("commit %s: %w", kind, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("commit %s: %w", kind, err)
	}
	return false, nil
}

// CommitSnapshot implements store.Store.
func (s *Store) CommitSnapshot(ctx context.Context, node string, seq uint64, snap *nodewardv1.Snapshot, received time.Time) (bool, error) {
	body, err := proto.Marshal(snap)
	if err != nil {
		return false, fmt.Errorf("encode snapshot: %w", err)
	}
	return s.commit(ctx, node, seq, "snapshot", received, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO snapshots (node, seq, received_ns, snapshot) VALUES (?, ?, ?, ?)`,
			node, int64(seq), received.UnixNano(), body); err != nil {
			return err
		}
		// Only a newer snapshot replaces the latest: replays may arrive late.
		_, err := tx.ExecContext(ctx, `UPDATE nodes SET snapshot = ?, snapshot_seq = ? WHERE name = ? AND (snapshot_seq IS NULL OR snapshot_seq < ?)`,
			body, int64(seq), node, int64(seq))
		return err
	})
}

// CommitEvents implements store.Store.
func (s *Store) CommitEvents(ctx context.Context, node string, seq uint64, events []*nodewardv1.Event, received time.Time) (bool, error) {
	return s.commit(ctx, node, seq, "events", received, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO events (node, seq, idx, time_ns, kind, body) VALUES (?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i, ev := range events {
			body, err := proto.Marshal(ev)
			if err != nil {
				return fmt.Errorf("encode event %d: %w", i, err)
			}
			if _, err := stmt.ExecContext(ctx, node, int64(seq), i, ev.GetTime().AsTime().UnixNano(), EventKind(ev), body); err != nil {
				return err
			}
		}
		return nil
	})
}

// EventKind is the short name of an event's body, as stored and filtered on.
func EventKind(ev *nodewardv1.Event) string {
	switch ev.GetBody().(type) {
	case *nodewardv1.Event_Exec:
		return "exec"
	case *nodewardv1.Event_Exit:
		return "exit"
	case *nodewardv1.Event_Ssh:
		return "ssh"
	case *nodewardv1.Event_Loss:
		return "loss"
	case *nodewardv1.Event_Gap:
		return "gap"
	default:
		return "unknown"
	}
}

// LastSequence implements store.Store.
func (s *Store) LastSequence(ctx context.Context, node string) (uint64, error) {
	var seq int64
	err := s.writer.QueryRowContext(ctx, `SELECT last_sequence FROM nodes WHERE name = ?`, node).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("last sequence of %s: %w", node, err)
	}
	return uint64(seq), nil
}

// TouchNode implements store.Store.
func (s *Store) TouchNode(ctx context.Context, node string, seen time.Time, connected bool) error {
	c := 0
	if connected {
		c = 1
	}
	_, err := s.writer.ExecContext(ctx, `INSERT INTO nodes (name, last_seen_ns, connected) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET last_seen_ns = MAX(last_seen_ns, excluded.last_seen_ns), connected = excluded.connected`,
		node, seen.UnixNano(), c)
	if err != nil {
		return fmt.Errorf("touch node %s: %w", node, err)
	}
	return nil
}

const maxPageSize = 1000

// ListNodes implements store.Store.
func (s *Store) ListNodes(ctx context.Context, pageSize int, pageToken string) ([]*nodewardv1.Node, string, error) {
	if pageSize <= 0 || pageSize > maxPageSize {
		pageSize = maxPageSize
	}
	after := ""
	if pageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(pageToken)
		if err != nil {
			return nil, "", fmt.Errorf("bad page token: %w", err)
		}
		after = string(b)
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT name, last_seen_ns, last_sequence, connected, snapshot FROM nodes WHERE name > ? ORDER BY name LIMIT ?`, after, pageSize+1)
	if err != nil {
		return nil, "", fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	var nodes []*nodewardv1.Node
	for rows.Next() {
		n, _, err := scanNode(rows)
		if err != nil {
			return nil, "", fmt.Errorf("list nodes: %w", err)
		}
		nodes = append(nodes, n)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list nodes: %w", err)
	}
	next := ""
	if len(nodes) > pageSize {
		nodes = nodes[:pageSize]
		next = base64.RawURLEncoding.EncodeToString([]byte(nodes[pageSize-1].GetName()))
	}
	return nodes, next, nil
}

// GetNode implements store.Store.
func (s *Store) GetNode(ctx context.Context, name string) (*nodewardv1.Node, *nodewardv1.Snapshot, error) {
	row := s.reader.QueryRowContext(ctx, `SELECT name, last_seen_ns, last_sequence, connected, snapshot FROM nodes WHERE name = ?`, name)
	n, snap, err := scanNode(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("node %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("get node %s: %w", name, err)
	}
	return n, snap, nil
}

// scanNode builds a Node from its latest snapshot plus the collector's own
// columns.
func scanNode(row interface{ Scan(...any) error }) (*nodewardv1.Node, *nodewardv1.Snapshot, error) {
	var (
		name              string
		lastSeen, lastSeq int64
		connected         int
		body              []byte
	)
	if err := row.Scan(&name, &lastSeen, &lastSeq, &connected, &body); err != nil {
		return nil, nil, err
	}
	var snap *nodewardv1.Snapshot
	node := &nodewardv1.Node{}
	if body != nil {
		snap = &nodewardv1.Snapshot{}
		if err := proto.Unmarshal(body, snap); err != nil {
			return nil, nil, fmt.Errorf("decode snapshot of %s: %w", name, err)
		}
		if snap.GetNode() != nil {
			node = proto.Clone(snap.GetNode()).(*nodewardv1.Node)
		}
	}
	node.Name = name
	node.LastSequence = uint64(lastSeq)
	node.Connected = connected != 0
	if lastSeen > 0 {
		node.LastSeen = timestamppb.New(time.Unix(0, lastSeen))
	}
	return node, snap, nil
}
