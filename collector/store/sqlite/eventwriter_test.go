//go:build cgo

package sqlite

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// walSize is the WAL file's length: a rewound WAL is written again from
// its start, so it stops growing.
func walSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// The event writer rewinds the WAL after the group it is asked to: the WAL
// then holds only what was written since.
func TestEventWriterRewindsWAL(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "nodeward.db")
	st, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.hooks == nil {
		t.Fatal("the cgo build has no event writer")
	}
	seq := uint64(0)
	commit := func() {
		t.Helper()
		seq++
		ev := &nodewardv1.Event{Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{Process: &nodewardv1.Process{Filename: "/bin/true"}}}}
		if _, err := st.CommitEvents(ctx, "node-a", seq, []*nodewardv1.Event{ev}, nil, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	for range 50 {
		commit()
	}
	st.hooks.restart()
	commit() // rewinds after committing
	grown := walSize(t, path)
	for range 10 {
		commit()
	}
	if after := walSize(t, path); after > grown {
		t.Fatalf("WAL grew from %d to %d bytes after the rewind", grown, after)
	}
	var n int
	if err := st.writer.QueryRowContext(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil && err != sql.ErrNoRows {
		t.Fatal(err)
	}
	if n != int(seq) {
		t.Fatalf("%d events stored, want %d", n, seq)
	}
}
