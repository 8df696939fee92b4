package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/nodeward/nodeward/collector/store/sqlstore"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/proto"
)

// migrationsUpTo is the embedded migrations up to and including version.
func migrationsUpTo(t *testing.T, version string) fs.FS {
	t.Helper()
	out := fstest.MapFS{}
	entries, err := fs.ReadDir(migrations, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name()[:4] > version {
			continue
		}
		body, err := fs.ReadFile(migrations, "migrations/"+e.Name())
		if err != nil {
			t.Fatal(err)
		}
		out["migrations/"+e.Name()] = &fstest.MapFile{Data: body}
	}
	return out
}

// A file written by an older collector keeps its nodes and their latest
// snapshots across the upgrade, including rows from before the node
// message had a column of its own.
func TestUpgradeKeepsNodesAndSnapshots(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	old := openDB(path, false)
	if err := sqlstore.Migrate(ctx, old, migrationsUpTo(t, "0003"), false); err != nil {
		t.Fatal(err)
	}
	snap := &nodewardv1.Snapshot{
		Node:     &nodewardv1.Node{Name: "node-a", KernelRelease: "6.1.0-old"},
		Packages: &nodewardv1.PackageInventory{Packages: []*nodewardv1.Package{{Name: "openssl", Version: "3.0.2"}}},
	}
	body, err := proto.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixNano()
	for _, q := range []struct {
		sql  string
		args []any
	}{
		// The layout schema 3 had: the latest snapshot in the nodes row, and
		// node_info empty for a row written before schema 2.
		{`INSERT INTO nodes (name, last_seen_ns, last_sequence, snapshot_seq, snapshot) VALUES (?, ?, ?, ?, ?)`, []any{"node-a", now, 7, 7, body}},
		{`INSERT INTO snapshots (node, seq, received_ns, snapshot) VALUES (?, ?, ?, ?)`, []any{"node-a", 7, now, body}},
		{`INSERT INTO sequences (node, seq, kind, received_ns) VALUES (?, ?, ?, ?)`, []any{"node-a", 7, "snapshot", now}},
	} {
		if _, err := old.ExecContext(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	st, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	node, got, err := st.GetNode(ctx, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	if node.GetKernelRelease() != "6.1.0-old" || node.GetLastSequence() != 7 {
		t.Fatalf("node after upgrade: %v", node)
	}
	if !proto.Equal(got, snap) {
		t.Fatalf("latest snapshot after upgrade: %v, want %v", got, snap)
	}
	// The next snapshot is diffed against the one from before the upgrade.
	next := proto.Clone(snap).(*nodewardv1.Snapshot)
	next.Packages.Packages[0].Version = "3.0.8"
	if _, err := st.CommitSnapshot(ctx, "node-a", 8, next, time.Now()); err != nil {
		t.Fatal(err)
	}
	changes, err := st.ListChanges(ctx, &nodewardv1.ListChangesRequest{NodeName: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(changes.GetChanges()) != 1 {
		t.Fatalf("changes after the first snapshot since the upgrade: %v, want the openssl update only", changes.GetChanges())
	}
}

// The checkpointer's connection closes last, so closing the store folds
// the WAL into the file and removes it: the file alone holds everything.
func TestCloseLeavesNoWAL(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "nodeward.db")
	st, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ev := &nodewardv1.Event{Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{}}}
	if _, err := st.CommitEvents(ctx, "node-a", 1, []*nodewardv1.Event{ev}, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Fatalf("no WAL while open: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-wal"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("WAL left after Close: %v", err)
	}
	st, err = Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if last, err := st.LastSequence(ctx, "node-a"); err != nil || last != 1 {
		t.Fatalf("after reopening: last sequence %d, %v; want 1", last, err)
	}
}

// Every connection of a pool gets the pragmas, not only the first, and a
// pragma SQLite refuses fails the connection with its name.
func TestPragmasOnEveryConnection(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "p.db")
	rw := openDB(path, true, "journal_mode=WAL")
	defer rw.Close()
	if _, err := rw.ExecContext(ctx, `CREATE TABLE t (x INTEGER)`); err != nil {
		t.Fatal(err)
	}
	ro := openDB(path, false, "query_only=1")
	defer ro.Close()
	conns := make([]*sql.Conn, 3)
	for i := range conns {
		c, err := ro.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	for i, c := range conns {
		if _, err := c.ExecContext(ctx, `INSERT INTO t VALUES (1)`); err == nil {
			t.Errorf("connection %d wrote through a query_only pool", i)
		}
	}
	bad := openDB(path, false, "busy_timeout=(")
	defer bad.Close()
	if err := bad.PingContext(ctx); err == nil || !strings.Contains(err.Error(), "PRAGMA busy_timeout=(") {
		t.Errorf("bad pragma: %v, want an error naming it", err)
	}
}
