// Package postgres is the collector's shared store: PostgreSQL through
// pgx. Several collector replicas can use one database; each commit group
// is announced with NOTIFY so every replica's live tail sees every agent.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/nodeward/nodeward/collector/store"
	"github.com/nodeward/nodeward/collector/store/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// channel is the NOTIFY channel commits are announced on.
const channel = "nodeward_commits"

// Store is a PostgreSQL-backed store.Store and store.Follower.
type Store struct {
	*sqlstore.Store
	dsn     string
	replica string
}

var (
	_ store.Store    = (*Store)(nil)
	_ store.Follower = (*Store)(nil)
)

// Open connects to the database at dsn (a postgres:// URL or key=value
// string), brings its schema up to date under an advisory lock (replicas
// may start together), and names this replica for its announcements.
func Open(ctx context.Context, dsn, replica string) (*Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("postgres %s@%s:%d: %w", cfg.User, cfg.Host, cfg.Port, err)
	}
	if err := migrate(ctx, db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{dsn: dsn, replica: replica}
	d := sqlstore.Dialect{Name: "postgres", Numbered: true, Greatest: "GREATEST", CommitWorkers: 4, AfterGroup: s.announce}
	s.Store = sqlstore.New(d, db, db)
	return s, nil
}

func migrate(ctx context.Context, db *sql.DB) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	// One replica migrates; the others wait and then find nothing to do.
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(7420)`); err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	defer func() { _, _ = conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(7420)`) }()
	return sqlstore.Migrate(ctx, conn, migrations, true)
}

// maxPayload keeps each NOTIFY under PostgreSQL's 8000-byte limit.
const maxPayload = 7000

// announce runs inside each commit group's transaction: NOTIFY is
// delivered only if, and once, the transaction commits. The payload is
// "replica" then one "received_ns node seq kind" line per new commit.
func (s *Store) announce(ctx context.Context, tx *sql.Tx, group []*store.Request) error {
	var b strings.Builder
	flush := func() error {
		if b.Len() == 0 {
			return nil
		}
		_, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, channel, s.replica+"\n"+b.String())
		b.Reset()
		return err
	}
	for _, r := range group {
		if r.Duplicate {
			continue
		}
		kind := "e"
		if r.Snapshot != nil {
			kind = "s"
		}
		line := fmt.Sprintf("%d %s %d %s\n", r.Received.UnixNano(), r.Node, r.Seq, kind)
		if b.Len()+len(line) > maxPayload {
			if err := flush(); err != nil {
				return fmt.Errorf("notify: %w", err)
			}
		}
		b.WriteString(line)
	}
	if err := flush(); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

type note struct {
	received int64
	node     string
	seq      uint64
	snapshot bool
}

func parsePayload(p string) (replica string, notes []note) {
	lines := strings.Split(strings.TrimSuffix(p, "\n"), "\n")
	replica = lines[0]
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 4 {
			continue
		}
		rec, err1 := strconv.ParseInt(f[0], 10, 64)
		seq, err2 := strconv.ParseUint(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		notes = append(notes, note{received: rec, node: f[1], seq: seq, snapshot: f[3] == "s"})
	}
	return replica, notes
}

// Follow implements store.Follower: it LISTENs for other replicas'
// commits and reads their events. When the listening connection drops it
// reconnects and catches up from its cursor (the newest received time it
// saw, less a margin), so a replica restart or network blip loses nothing;
// the caller drops commits it has already seen.
func (s *Store) Follow(ctx context.Context, fn func(store.Committed)) error {
	// From now, so that the first LISTEN also catches up on what other
	// replicas committed while it was being set up.
	cursor := time.Now().UnixNano()
	backoff := 100 * time.Millisecond
	for {
		// A failed LISTEN connection is retried with backoff; the cursor
		// makes the next one catch up on what was committed meanwhile.
		if err := s.listen(ctx, &cursor, fn); err == nil {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (s *Store) listen(ctx context.Context, cursor *int64, fn func(store.Committed)) error {
	conn, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `LISTEN `+channel); err != nil {
		return err
	}
	if err := s.catchUp(ctx, cursor, fn); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		replica, notes := parsePayload(n.Payload)
		for _, nt := range notes {
			*cursor = max(*cursor, nt.received)
		}
		if replica == s.replica {
			continue
		}
		if err := s.deliver(ctx, notes, fn); err != nil {
			return err
		}
	}
}

func (s *Store) deliver(ctx context.Context, notes []note, fn func(store.Committed)) error {
	for _, nt := range notes {
		c := store.Committed{Node: nt.node, Seq: nt.seq}
		if !nt.snapshot {
			evs, err := s.EventsOf(ctx, nt.node, nt.seq)
			if err != nil {
				return err
			}
			c.Events = evs
		}
		fn(c)
	}
	return nil
}

// catchUp replays commits received since the cursor (less a margin for
// clocks and in-flight transactions).
func (s *Store) catchUp(ctx context.Context, cursor *int64, fn func(store.Committed)) error {
	from := *cursor - int64(5*time.Second)
	rows, err := s.Writer().QueryContext(ctx, `SELECT received_ns, node, seq, kind FROM sequences WHERE received_ns >= $1 ORDER BY received_ns LIMIT 100000`, from)
	if err != nil {
		return err
	}
	var notes []note
	for rows.Next() {
		var nt note
		var kind string
		var seq int64
		if err := rows.Scan(&nt.received, &nt.node, &seq, &kind); err != nil {
			rows.Close()
			return err
		}
		nt.seq, nt.snapshot = uint64(seq), kind == "snapshot"
		notes = append(notes, nt)
		*cursor = max(*cursor, nt.received)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	return s.deliver(ctx, notes, fn)
}

// ErrNoDSN is returned for an empty connection string.
var ErrNoDSN = errors.New("postgres: empty connection string")
