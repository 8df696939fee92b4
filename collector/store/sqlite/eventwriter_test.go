//go:build cgo

package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	// The background checkpoint may hold the checkpoint lock just then; the
	// writer then leaves the rewind to a later request, as this does.
	var grown, after int64
	for range 3 {
		st.hooks.restart()
		commit() // rewinds, then commits
		grown = walSize(t, path)
		for range 10 {
			commit()
		}
		if after = walSize(t, path); after <= grown {
			break
		}
	}
	if after > grown {
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

// Groups far larger than the event writer's WAL buffer, with a rewind
// among them, land whole: after a reopen every event is there and SQLite
// finds the file consistent.
func TestEventWriterLargeGroupsIntact(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "nodeward.db")
	st, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	const nodes, batches, per = 8, 12, 150
	args := strings.Repeat("x", 900) // about a page per event
	var wg sync.WaitGroup
	errs := make(chan error, nodes*batches)
	for n := range nodes {
		wg.Go(func() {
			node := fmt.Sprintf("node-%d", n)
			for seq := uint64(1); seq <= batches; seq++ {
				if n == 0 && seq == batches/2 {
					st.hooks.restart()
				}
				evs := make([]*nodewardv1.Event, per)
				for i := range evs {
					evs[i] = &nodewardv1.Event{Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{Process: &nodewardv1.Process{
						Filename: "/bin/sh", Args: []string{"sh", "-c", args}}}}}
				}
				if _, err := st.CommitEvents(ctx, node, seq, evs, nil, time.Now()); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var n int
	var check string
	if err := st.writer.QueryRowContext(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if err := st.writer.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&check); err != nil {
		t.Fatal(err)
	}
	if n != nodes*batches*per || check != "ok" {
		t.Fatalf("after reopening: %d events (want %d), integrity check %q", n, nodes*batches*per, check)
	}
}
