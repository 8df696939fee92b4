// Package sqlstore is the SQL both store backends share: the same schema
// (each backend has its own migrations for its types), the same queries,
// and group commit. A Dialect says what differs.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nodeward/nodeward/collector/eventfilter"
	"github.com/nodeward/nodeward/collector/pkgver"
	"github.com/nodeward/nodeward/collector/store"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Dialect is what differs between backends.
type Dialect struct {
	Name string
	// Numbered placeholders ($1, $2...) instead of '?'.
	Numbered bool
	// Greatest is the two-argument maximum function: MAX or GREATEST.
	Greatest string
	// InsertEvents begins the multi-row event INSERT. SQLite's "INSERT OR
	// FAIL" spares it a statement journal (a copy of every page the
	// statement touches, kept to undo a half-done statement): a failed
	// group rolls back whole anyway.
	InsertEvents string
	// AfterGroup runs inside each group's transaction, after its writes
	// (PostgreSQL notifies other replicas there).
	AfterGroup func(ctx context.Context, tx *sql.Tx, group []*store.Request) error
	// CommitWorkers is how many group transactions may run at once.
	CommitWorkers int
	// WriteEvents, when set, commits a group of event batches (no
	// snapshots) instead, in a transaction of its own, with the same
	// effects: sequences claimed (Duplicate set), nodes touched, the
	// claimed batches' EventRows inserted.
	WriteEvents func(ctx context.Context, group []*store.Request) error
	// Flush, when set, makes what WriteEvents committed durable; the group
	// commit answers a group only after a flush that began after it.
	Flush func() error
}

// Store implements store.Store over database/sql.
type Store struct {
	d         Dialect
	writer    *sql.DB
	reader    *sql.DB
	committer *store.Committer
	closers   []func() error
	now       func() time.Time

	stmtMu sync.Mutex
	stmts  map[[2]int]*sql.Stmt // by kind and rows; see prepareWrites
}

var _ store.Store = (*Store)(nil)

// New wraps open pools: writer for commits, reader for queries (they may be
// the same pool). closers run on Close after the pools are closed.
func New(d Dialect, writer, reader *sql.DB, closers ...func() error) *Store {
	if d.InsertEvents == "" {
		d.InsertEvents = "INSERT"
	}
	if d.CommitWorkers < 1 {
		d.CommitWorkers = 1
	}
	s := &Store{d: d, writer: writer, reader: reader, closers: closers, now: time.Now}
	// Bounded by rows so one transaction stays short (ack latency) while
	// still amortising the flush over many agents.
	s.committer = store.NewCommitter(s.apply, d.Flush, d.CommitWorkers, 20000, store.CommitWindow)
	return s
}

// Writer is the pool commits use.
func (s *Store) Writer() *sql.DB { return s.writer }

// Close stops group commit and closes the pools.
func (s *Store) Close() error {
	s.committer.Close()
	var errs []error
	s.stmtMu.Lock()
	for _, st := range s.stmts {
		errs = append(errs, st.Close())
	}
	s.stmtMu.Unlock()
	if s.reader != s.writer {
		errs = append(errs, s.reader.Close())
	}
	errs = append(errs, s.writer.Close())
	for _, c := range s.closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}

// q rewrites '?' placeholders for the dialect.
func (s *Store) q(query string) string {
	if !s.d.Numbered {
		return query
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

// The group commit's multi-row INSERTs, prepared once: one with hundreds of
// placeholders costs more to parse than to run, and every commit group used
// to parse its own. Statements come in the sizes chunks makes.
const (
	stmtClaim = iota
	stmtEvents
)

// prepareWrites prepares the group commit's statements on the writer pool.
// It runs before the group's transaction: SQLite's pool is one connection,
// which the transaction then holds.
func (s *Store) prepareWrites(ctx context.Context) error {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if s.stmts != nil {
		return nil
	}
	stmts := map[[2]int]*sql.Stmt{}
	for size := writeChunk; size > 0; size /= 2 {
		for kind, query := range map[int]string{
			stmtClaim:  `INSERT INTO sequences (node, seq, kind, received_ns) VALUES ` + values(size, 4) + ` ON CONFLICT DO NOTHING RETURNING node, seq`,
			stmtEvents: s.d.InsertEventsSQL(size),
		} {
			st, err := s.writer.PrepareContext(ctx, s.q(query))
			if err != nil {
				for _, st := range stmts {
					st.Close()
				}
				return fmt.Errorf("prepare: %w", err)
			}
			stmts[[2]int{kind, size}] = st
		}
	}
	s.stmts = stmts
	return nil
}

// prepared is the statement of kind for size rows, for use in tx.
func (s *Store) prepared(ctx context.Context, tx *sql.Tx, kind, size int) *sql.Stmt {
	s.stmtMu.Lock()
	st := s.stmts[[2]int{kind, size}]
	s.stmtMu.Unlock()
	return tx.StmtContext(ctx, st)
}

// chunks splits n rows into statements of at most limit rows: full ones,
// then powers of two, so a few statement sizes serve every group.
func chunks(n, limit int) []int {
	var out []int
	for ; n >= limit; n -= limit {
		out = append(out, limit)
	}
	for size := limit / 2; size > 0; size /= 2 {
		if n >= size {
			out = append(out, size)
			n -= size
		}
	}
	return out
}

// clean makes a string safe for any backend's text type (PostgreSQL
// refuses NUL and invalid UTF-8).
func clean(s string) string {
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// CommitSnapshot implements store.Store.
func (s *Store) CommitSnapshot(ctx context.Context, node string, seq uint64, snap *nodewardv1.Snapshot, received time.Time) (bool, error) {
	if node == "" || seq == 0 {
		return false, errors.New("commit snapshot: node and sequence are required")
	}
	return s.committer.Submit(ctx, &store.Request{Node: node, Seq: seq, Received: received, Snapshot: snap})
}

// CommitEvents implements store.Store.
func (s *Store) CommitEvents(ctx context.Context, node string, seq uint64, events []*nodewardv1.Event, wire [][]byte, received time.Time) (bool, error) {
	if node == "" || seq == 0 {
		return false, errors.New("commit events: node and sequence are required")
	}
	if events != nil && wire != nil {
		return false, errors.New("commit events: both decoded and encoded events")
	}
	// Encode here, in the caller's goroutine: many streams encode in
	// parallel while the writer writes.
	rows, err := encodeEvents(events, wire)
	if err != nil {
		return false, fmt.Errorf("commit events: %w", err)
	}
	return s.committer.Submit(ctx, &store.Request{Node: node, Seq: seq, Received: received, Events: len(rows), Prepared: rows})
}

const eventCols = 14

// InsertEventsSQL inserts rows events, binding for each, in order: node,
// seq, idx, time_ns, received_ns, kind, bin, uid, usr, pod, pod_ns,
// container, session, body.
func (d Dialect) InsertEventsSQL(rows int) string {
	return d.InsertEvents + ` INTO events (node, seq, idx, time_ns, received_ns, kind, bin, uid, usr, pod, pod_ns, container, session, body) VALUES ` + values(rows, eventCols)
}

// TouchNodeSQL records a node's newest sequence and when it was heard from,
// binding name, last_seen_ns and last_sequence.
func (d Dialect) TouchNodeSQL() string {
	g := d.Greatest
	return `INSERT INTO nodes (name, last_seen_ns, last_sequence) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET last_seen_ns = ` + g + `(nodes.last_seen_ns, excluded.last_seen_ns),
		last_sequence = ` + g + `(nodes.last_sequence, excluded.last_sequence)`
}

// writeChunk rows at most go into one multi-row INSERT.
const writeChunk = 128

func (s *Store) apply(ctx context.Context, group []*store.Request) (err error) {
	if s.d.WriteEvents != nil && !slices.ContainsFunc(group, func(r *store.Request) bool { return r.Snapshot != nil }) {
		return s.d.WriteEvents(ctx, group)
	}
	if err := s.prepareWrites(ctx); err != nil {
		return err
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
			for _, r := range group {
				r.Duplicate = false
			}
		}
	}()
	claimed, err := s.claim(ctx, tx, group)
	if err != nil {
		return err
	}
	if err := s.touchNodes(ctx, tx, group, claimed); err != nil {
		return err
	}
	var ins *eventInserter
	for i, r := range group {
		if !claimed[i] {
			r.Duplicate = true
			continue
		}
		if r.Snapshot != nil {
			if err := s.applySnapshot(ctx, tx, r); err != nil {
				return fmt.Errorf("snapshot %s/%d: %w", r.Node, r.Seq, err)
			}
			continue
		}
		if ins == nil {
			ins = &eventInserter{s: s, tx: tx}
		}
		if err := ins.add(ctx, r); err != nil {
			return fmt.Errorf("events %s/%d: %w", r.Node, r.Seq, err)
		}
	}
	if ins != nil {
		if err := ins.flush(ctx); err != nil {
			return fmt.Errorf("events: %w", err)
		}
	}
	if s.d.AfterGroup != nil {
		if err := s.d.AfterGroup(ctx, tx, group); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// claim records every request's (node, sequence) in a few multi-row
// INSERTs and reports which were new: a sequence already stored, or
// repeated earlier in the same group, is a duplicate.
func (s *Store) claim(ctx context.Context, tx *sql.Tx, group []*store.Request) ([]bool, error) {
	type key struct {
		node string
		seq  int64
	}
	inserted := map[key]bool{}
	lo := 0
	for _, size := range chunks(len(group), writeChunk) {
		part := group[lo : lo+size]
		lo += size
		args := make([]any, 0, 4*len(part))
		for _, r := range part {
			kind := "events"
			if r.Snapshot != nil {
				kind = "snapshot"
			}
			args = append(args, r.Node, int64(r.Seq), kind, r.Received.UnixNano())
		}
		rows, err := s.prepared(ctx, tx, stmtClaim, size).QueryContext(ctx, args...)
		if err != nil {
			return nil, fmt.Errorf("claim sequences: %w", err)
		}
		for rows.Next() {
			var k key
			if err := rows.Scan(&k.node, &k.seq); err != nil {
				rows.Close()
				return nil, fmt.Errorf("claim sequences: %w", err)
			}
			inserted[k] = true
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("claim sequences: %w", err)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("claim sequences: %w", err)
		}
	}
	claimed := make([]bool, len(group))
	for i, r := range group {
		k := key{r.Node, int64(r.Seq)}
		if inserted[k] {
			claimed[i] = true
			delete(inserted, k) // a repeat later in the group is a duplicate
		}
	}
	return claimed, nil
}

// touchNodes records, once per node in the group, its newest sequence and
// when it was heard from.
func (s *Store) touchNodes(ctx context.Context, tx *sql.Tx, group []*store.Request, claimed []bool) error {
	type latest struct{ seen, seq int64 }
	nodes := map[string]latest{}
	var order []string
	for i, r := range group {
		if !claimed[i] {
			continue
		}
		l, ok := nodes[r.Node]
		if !ok {
			order = append(order, r.Node)
		}
		nodes[r.Node] = latest{max(l.seen, r.Received.UnixNano()), max(l.seq, int64(r.Seq))}
	}
	if len(order) == 0 {
		return nil
	}
	touch, err := tx.PrepareContext(ctx, s.q(s.d.TouchNodeSQL()))
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	defer touch.Close()
	// Sorted, so concurrent groups (PostgreSQL) lock node rows in one order.
	sort.Strings(order)
	for _, n := range order {
		if _, err := touch.ExecContext(ctx, n, nodes[n].seen, nodes[n].seq); err != nil {
			return fmt.Errorf("node %s: %w", n, err)
		}
	}
	return nil
}

// eventInserter batches event rows into multi-row INSERTs.
type eventInserter struct {
	s    *Store
	tx   *sql.Tx
	rows []any
	n    int
}

// EventRow is one event as stored: its columns, worked out in the
// committing stream's goroutine so the single writer only writes.
type EventRow struct {
	Index int
	eventfilter.Columns
	Body []byte
}

// EventRows are the rows CommitEvents prepared for r.
func EventRows(r *store.Request) []EventRow { return r.Prepared.([]EventRow) }

// encodeEvents turns a batch, decoded or encoded, into rows.
func encodeEvents(events []*nodewardv1.Event, wire [][]byte) ([]EventRow, error) {
	rows := make([]EventRow, max(len(events), len(wire)))
	for i := range rows {
		r := &rows[i]
		var err error
		if wire != nil {
			r.Body = wire[i]
			r.Columns, err = eventfilter.ExtractWire(r.Body)
		} else {
			r.Body, err = proto.Marshal(events[i])
			r.Columns = eventfilter.Extract(events[i])
		}
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		r.Index = i
		for _, f := range []*string{&r.Binary, &r.User, &r.Pod, &r.Namespace, &r.Container, &r.Session} {
			*f = clean(*f)
		}
	}
	return rows, nil
}

func (e *eventInserter) add(ctx context.Context, r *store.Request) error {
	for _, row := range EventRows(r) {
		var uid any
		if row.UID >= 0 {
			uid = row.UID
		}
		e.rows = append(e.rows, r.Node, int64(r.Seq), row.Index, row.TimeNS, r.Received.UnixNano(), eventfilter.KindName(row.Kind),
			row.Binary, uid, row.User, row.Pod, row.Namespace, row.Container, row.Session, row.Body)
		e.n++
		if e.n == writeChunk {
			if err := e.exec(ctx, writeChunk, e.rows); err != nil {
				return err
			}
			e.rows, e.n = e.rows[:0], 0
		}
	}
	return nil
}

// exec inserts n rows.
func (e *eventInserter) exec(ctx context.Context, n int, rows []any) error {
	_, err := e.s.prepared(ctx, e.tx, stmtEvents, n).ExecContext(ctx, rows...)
	return err
}

func (e *eventInserter) flush(ctx context.Context) error {
	rows := e.rows
	for _, size := range chunks(e.n, writeChunk) {
		if err := e.exec(ctx, size, rows[:size*eventCols]); err != nil {
			return err
		}
		rows = rows[size*eventCols:]
	}
	e.rows, e.n = e.rows[:0], 0
	return nil
}

// latestSnapshotOf selects, with a node's row, its latest snapshot from the
// history, which nodes.snapshot_seq names.
const latestSnapshotOf = `FROM nodes n LEFT JOIN snapshots h ON h.node = n.name AND h.seq = n.snapshot_seq WHERE n.name = ?`

func (s *Store) applySnapshot(ctx context.Context, tx *sql.Tx, r *store.Request) error {
	snap := r.Snapshot
	var (
		latest sql.NullInt64
		oldRaw []byte
	)
	if err := tx.QueryRowContext(ctx, s.q(`SELECT n.snapshot_seq, h.snapshot `+latestSnapshotOf), r.Node).Scan(&latest, &oldRaw); err != nil {
		return fmt.Errorf("read latest: %w", err)
	}
	if !latest.Valid || int64(r.Seq) > latest.Int64 {
		var old *nodewardv1.Snapshot
		if oldRaw != nil {
			old = &nodewardv1.Snapshot{}
			if err := proto.Unmarshal(oldRaw, old); err != nil {
				return fmt.Errorf("decode previous snapshot: %w", err)
			}
		}
		if snap.GetNode() == nil {
			snap.Node = &nodewardv1.Node{Name: r.Node}
		}
		d := store.Diff(old, snap, r.Received, r.Seq)
		if err := s.writeDelta(ctx, tx, r, d); err != nil {
			return err
		}
		info, err := proto.Marshal(snap.GetNode())
		if err != nil {
			return fmt.Errorf("encode node: %w", err)
		}
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE nodes SET snapshot_seq = ?, node_info = ? WHERE name = ?`),
			int64(r.Seq), info, r.Node); err != nil {
			return fmt.Errorf("update latest: %w", err)
		}
	}
	body, err := proto.Marshal(snap)
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO snapshots (node, seq, received_ns, snapshot) VALUES (?, ?, ?, ?)`),
		r.Node, int64(r.Seq), r.Received.UnixNano(), body); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	return nil
}

func (s *Store) writeDelta(ctx context.Context, tx *sql.Tx, r *store.Request, d *store.Delta) error {
	now := r.Received.UnixNano()
	exec := func(query string, args ...any) error {
		_, err := tx.ExecContext(ctx, s.q(query), args...)
		return err
	}
	for _, k := range d.RemovePackages {
		if err := exec(`DELETE FROM packages WHERE node = ? AND pkey = ?`, r.Node, clean(k)); err != nil {
			return fmt.Errorf("packages: %w", err)
		}
	}
	// One multi-row INSERT per chunk: a first snapshot carries hundreds of
	// packages, and each statement is a round trip on PostgreSQL.
	const chunk = 100
	for lo := 0; lo < len(d.AddPackages); lo += chunk {
		part := d.AddPackages[lo:min(lo+chunk, len(d.AddPackages))]
		args := make([]any, 0, 5*len(part))
		for _, p := range part {
			b, err := proto.Marshal(p)
			if err != nil {
				return err
			}
			args = append(args, r.Node, clean(store.PackageKey(p)), clean(p.GetName()), now, b)
		}
		if err := exec(`INSERT INTO packages (node, pkey, name, first_seen_ns, body) VALUES `+values(len(part), 5)+` ON CONFLICT DO NOTHING`, args...); err != nil {
			return fmt.Errorf("packages: %w", err)
		}
	}
	for _, k := range d.RemovePorts {
		if err := exec(`DELETE FROM ports WHERE node = ? AND pkey = ?`, r.Node, clean(k)); err != nil {
			return fmt.Errorf("ports: %w", err)
		}
	}
	for _, p := range d.AddPorts {
		b, err := proto.Marshal(p)
		if err != nil {
			return err
		}
		if err := exec(`INSERT INTO ports (node, pkey, port, protocol, exposure, first_seen_ns, body) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			r.Node, clean(store.PortKey(p)), int64(p.GetPort()), int64(p.GetProtocol()), int64(p.GetExposure()), now, b); err != nil {
			return fmt.Errorf("ports: %w", err)
		}
	}
	if err := exec(`DELETE FROM findings WHERE node = ?`, r.Node); err != nil {
		return fmt.Errorf("findings: %w", err)
	}
	for _, f := range d.Findings {
		b, err := proto.Marshal(f)
		if err != nil {
			return err
		}
		if err := exec(`INSERT INTO findings (node, check_id, severity, status, body) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			r.Node, clean(f.GetCheckId()), int64(f.GetSeverity()), int64(f.GetStatus()), b); err != nil {
			return fmt.Errorf("findings: %w", err)
		}
	}
	for _, c := range d.Changes {
		b, err := proto.Marshal(c)
		if err != nil {
			return err
		}
		if err := exec(`INSERT INTO changes (node, time_ns, kind, subject, body) VALUES (?, ?, ?, ?, ?)`,
			r.Node, now, int64(c.GetKind()), clean(c.GetSubject()), b); err != nil {
			return fmt.Errorf("changes: %w", err)
		}
	}
	return nil
}

// values is "(?, ?), (?, ?)" for n rows of cols columns.
func values(n, cols int) string {
	row := "(" + strings.TrimSuffix(strings.Repeat("?, ", cols), ", ") + ")"
	return strings.TrimSuffix(strings.Repeat(row+", ", n), ", ")
}

// LastSequence implements store.Store.
func (s *Store) LastSequence(ctx context.Context, node string) (uint64, error) {
	var seq int64
	err := s.writer.QueryRowContext(ctx, s.q(`SELECT last_sequence FROM nodes WHERE name = ?`), node).Scan(&seq)
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
	_, err := s.writer.ExecContext(ctx, s.q(`INSERT INTO nodes (name, last_seen_ns, connected) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET last_seen_ns = `+s.d.Greatest+`(nodes.last_seen_ns, excluded.last_seen_ns), connected = excluded.connected`),
		node, seen.UnixNano(), c)
	if err != nil {
		return fmt.Errorf("touch node %s: %w", node, err)
	}
	return nil
}

// nodeCols reads a nodes row; rows from before node_info existed bring their
// latest snapshot instead.
const nodeCols = `name, last_seen_ns, last_sequence, connected, node_info,
	CASE WHEN node_info IS NULL THEN (SELECT h.snapshot FROM snapshots h WHERE h.node = nodes.name AND h.seq = nodes.snapshot_seq) END`

// ListNodes implements store.Store.
func (s *Store) ListNodes(ctx context.Context, pageSize int, pageToken string) ([]*nodewardv1.Node, string, error) {
	if pageSize <= 0 || pageSize > store.MaxPageSize {
		pageSize = store.MaxPageSize
	}
	var after store.KeyCursor
	if err := store.DecodeToken(pageToken, &after); err != nil {
		return nil, "", err
	}
	rows, err := s.reader.QueryContext(ctx, s.q(`SELECT `+nodeCols+` FROM nodes WHERE name > ? ORDER BY name LIMIT ?`), after.Node, pageSize+1)
	if err != nil {
		return nil, "", fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	var nodes []*nodewardv1.Node
	for rows.Next() {
		n, err := s.scanNode(rows)
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
		next = store.EncodeToken(store.KeyCursor{Node: nodes[pageSize-1].GetName()})
	}
	return nodes, next, nil
}

// GetNode implements store.Store.
func (s *Store) GetNode(ctx context.Context, name string) (*nodewardv1.Node, *nodewardv1.Snapshot, error) {
	n, err := s.scanNode(s.reader.QueryRowContext(ctx, s.q(`SELECT `+nodeCols+` FROM nodes WHERE name = ?`), name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fmt.Errorf("node %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("get node %s: %w", name, err)
	}
	var raw []byte
	if err := s.reader.QueryRowContext(ctx, s.q(`SELECT h.snapshot `+latestSnapshotOf), name).Scan(&raw); err != nil {
		return nil, nil, fmt.Errorf("get node %s: %w", name, err)
	}
	if raw == nil {
		return n, nil, nil
	}
	snap := &nodewardv1.Snapshot{}
	if err := proto.Unmarshal(raw, snap); err != nil {
		return nil, nil, fmt.Errorf("decode snapshot of %s: %w", name, err)
	}
	return n, snap, nil
}

// scanNode builds a Node from its stored Node message (or, for rows from
// before node_info existed, its snapshot) plus the collector's own columns.
func (s *Store) scanNode(row interface{ Scan(...any) error }) (*nodewardv1.Node, error) {
	var (
		name              string
		lastSeen, lastSeq int64
		connected         int64
		info, snapRaw     []byte
	)
	if err := row.Scan(&name, &lastSeen, &lastSeq, &connected, &info, &snapRaw); err != nil {
		return nil, err
	}
	node := &nodewardv1.Node{}
	switch {
	case info != nil:
		if err := proto.Unmarshal(info, node); err != nil {
			return nil, fmt.Errorf("decode node %s: %w", name, err)
		}
	case snapRaw != nil:
		snap := &nodewardv1.Snapshot{}
		if err := proto.Unmarshal(snapRaw, snap); err != nil {
			return nil, fmt.Errorf("decode snapshot of %s: %w", name, err)
		}
		if snap.GetNode() != nil {
			node = snap.GetNode()
		}
		node.Posture = store.Posture(snap.GetFindings())
	}
	node.Name = name
	node.LastSequence = uint64(lastSeq)
	if lastSeen > 0 {
		node.LastSeen = timestamppb.New(time.Unix(0, lastSeen))
	}
	// A replica that died cannot record its agents' disconnects.
	node.Connected = connected != 0 && s.now().Sub(time.Unix(0, lastSeen)) < store.StaleAfter
	return node, nil
}

// where collects SQL conditions and their arguments.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

func (w *where) in(col string, vals []any) {
	if len(vals) == 0 {
		return
	}
	w.add(col+" IN ("+strings.TrimSuffix(strings.Repeat("?, ", len(vals)), ", ")+")", vals...)
}

func anys[T any](v []T) []any {
	out := make([]any, len(v))
	for i := range v {
		out[i] = v[i]
	}
	return out
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// ListFindings implements store.Store.
func (s *Store) ListFindings(ctx context.Context, req *nodewardv1.ListFindingsRequest) (*nodewardv1.ListFindingsResponse, error) {
	size := store.PageSize(req.GetPageSize())
	var cur store.KeyCursor
	if err := store.DecodeToken(req.GetPageToken(), &cur); err != nil {
		return nil, err
	}
	w := &where{}
	w.add("(node, check_id) > (?, ?)", cur.Node, cur.Key)
	if req.GetNodeName() != "" {
		w.add("node = ?", req.GetNodeName())
	}
	if req.GetCheckId() != "" {
		w.add("check_id = ?", req.GetCheckId())
	}
	if req.GetMinSeverity() != 0 {
		w.add("severity >= ?", int64(req.GetMinSeverity()))
	}
	if req.GetStatus() != 0 {
		w.add("status = ?", int64(req.GetStatus()))
	}
	rows, err := s.reader.QueryContext(ctx, s.q(`SELECT node, check_id, body FROM findings`+w.sql()+` ORDER BY node, check_id LIMIT ?`), append(w.args, size+1)...)
	if err != nil {
		return nil, fmt.Errorf("list findings: %w", err)
	}
	defer rows.Close()
	resp := &nodewardv1.ListFindingsResponse{}
	for rows.Next() {
		var node, check string
		var body []byte
		if err := rows.Scan(&node, &check, &body); err != nil {
			return nil, fmt.Errorf("list findings: %w", err)
		}
		if len(resp.Findings) == size {
			last := resp.Findings[size-1]
			resp.NextPageToken = store.EncodeToken(store.KeyCursor{Node: last.GetNodeName(), Key: last.GetCheckId()})
			break
		}
		f := &nodewardv1.Finding{}
		if err := proto.Unmarshal(body, f); err != nil {
			return nil, fmt.Errorf("decode finding: %w", err)
		}
		f.NodeName, f.CheckId = node, check
		resp.Findings = append(resp.Findings, f)
	}
	return resp, rows.Err()
}

// ListPackages implements store.Store.
func (s *Store) ListPackages(ctx context.Context, req *nodewardv1.ListPackagesRequest) (*nodewardv1.ListPackagesResponse, error) {
	if req.GetName() == "" && req.GetNodeName() == "" {
		return nil, fmt.Errorf("%w: a package name or a node is required", store.ErrBadRequest)
	}
	size := store.PageSize(req.GetPageSize())
	var cur store.KeyCursor
	if err := store.DecodeToken(req.GetPageToken(), &cur); err != nil {
		return nil, err
	}
	want := pkgver.Parse(req.GetVersion())
	op := req.GetVersionOp()
	if op != nodewardv1.VersionOp_VERSION_OP_UNSPECIFIED && req.GetVersion() == "" {
		return nil, fmt.Errorf("%w: a version operator needs a version", store.ErrBadRequest)
	}
	resp := &nodewardv1.ListPackagesResponse{}
	const chunk = 1000
	scanned := 0
	for {
		w := &where{}
		w.add("(node, pkey) > (?, ?)", cur.Node, cur.Key)
		if req.GetName() != "" {
			w.add("name = ?", req.GetName())
		}
		if req.GetNodeName() != "" {
			w.add("node = ?", req.GetNodeName())
		}
		rows, err := s.reader.QueryContext(ctx, s.q(`SELECT node, pkey, first_seen_ns, body FROM packages`+w.sql()+` ORDER BY node, pkey LIMIT ?`), append(w.args, chunk)...)
		if err != nil {
			return nil, fmt.Errorf("list packages: %w", err)
		}
		n := 0
		for rows.Next() {
			var node, key string
			var first int64
			var body []byte
			if err := rows.Scan(&node, &key, &first, &body); err != nil {
				rows.Close()
				return nil, fmt.Errorf("list packages: %w", err)
			}
			n++
			if len(resp.Packages) == size {
				rows.Close()
				resp.NextPageToken = store.EncodeToken(cur)
				return resp, nil
			}
			cur = store.KeyCursor{Node: node, Key: key}
			p := &nodewardv1.Package{}
			if err := proto.Unmarshal(body, p); err != nil {
				rows.Close()
				return nil, fmt.Errorf("decode package: %w", err)
			}
			if pkgver.Satisfies(p, op, want) {
				resp.Packages = append(resp.Packages, &nodewardv1.NodePackage{NodeName: node, Package: p, FirstSeen: timestamppb.New(time.Unix(0, first))})
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("list packages: %w", err)
		}
		scanned += n
		if n < chunk {
			return resp, nil
		}
		if scanned >= 20*chunk {
			resp.NextPageToken = store.EncodeToken(cur)
			return resp, nil
		}
	}
}

// ListPorts implements store.Store.
func (s *Store) ListPorts(ctx context.Context, req *nodewardv1.ListPortsRequest) (*nodewardv1.ListPortsResponse, error) {
	size := store.PageSize(req.GetPageSize())
	var cur store.KeyCursor
	if err := store.DecodeToken(req.GetPageToken(), &cur); err != nil {
		return nil, err
	}
	w := &where{}
	w.add("(node, pkey) > (?, ?)", cur.Node, cur.Key)
	if req.GetPort() != 0 {
		w.add("port = ?", int64(req.GetPort()))
	}
	if req.GetProtocol() != 0 {
		w.add("protocol = ?", int64(req.GetProtocol()))
	}
	if req.GetExposedOnly() {
		w.add("exposure <> ?", int64(nodewardv1.Exposure_EXPOSURE_LOOPBACK))
	}
	if req.GetNodeName() != "" {
		w.add("node = ?", req.GetNodeName())
	}
	rows, err := s.reader.QueryContext(ctx, s.q(`SELECT node, pkey, first_seen_ns, body FROM ports`+w.sql()+` ORDER BY node, pkey LIMIT ?`), append(w.args, size+1)...)
	if err != nil {
		return nil, fmt.Errorf("list ports: %w", err)
	}
	defer rows.Close()
	resp := &nodewardv1.ListPortsResponse{}
	var last store.KeyCursor
	for rows.Next() {
		var node, key string
		var first int64
		var body []byte
		if err := rows.Scan(&node, &key, &first, &body); err != nil {
			return nil, fmt.Errorf("list ports: %w", err)
		}
		if len(resp.Ports) == size {
			resp.NextPageToken = store.EncodeToken(last)
			break
		}
		last = store.KeyCursor{Node: node, Key: key}
		p := &nodewardv1.ListeningPort{}
		if err := proto.Unmarshal(body, p); err != nil {
			return nil, fmt.Errorf("decode port: %w", err)
		}
		resp.Ports = append(resp.Ports, &nodewardv1.NodePort{NodeName: node, Port: p, FirstSeen: timestamppb.New(time.Unix(0, first))})
	}
	return resp, rows.Err()
}

// ListChanges implements store.Store.
func (s *Store) ListChanges(ctx context.Context, req *nodewardv1.ListChangesRequest) (*nodewardv1.ListChangesResponse, error) {
	size := store.PageSize(req.GetPageSize())
	cur := store.TimeCursor{TimeNS: 1<<63 - 1, ID: 1<<63 - 1}
	if err := store.DecodeToken(req.GetPageToken(), &cur); err != nil {
		return nil, err
	}
	w := &where{}
	w.add("(time_ns, id) < (?, ?)", cur.TimeNS, cur.ID)
	if req.GetNodeName() != "" {
		w.add("node = ?", req.GetNodeName())
	}
	var kinds []int64
	for _, k := range req.GetKinds() {
		kinds = append(kinds, int64(k))
	}
	w.in("kind", anys(kinds))
	if req.GetSubject() != "" {
		w.add("subject = ?", req.GetSubject())
	}
	if req.GetSince() != nil {
		w.add("time_ns >= ?", req.GetSince().AsTime().UnixNano())
	}
	rows, err := s.reader.QueryContext(ctx, s.q(`SELECT id, time_ns, body FROM changes`+w.sql()+` ORDER BY time_ns DESC, id DESC LIMIT ?`), append(w.args, size+1)...)
	if err != nil {
		return nil, fmt.Errorf("list changes: %w", err)
	}
	defer rows.Close()
	resp := &nodewardv1.ListChangesResponse{}
	var last store.TimeCursor
	for rows.Next() {
		var id, t int64
		var body []byte
		if err := rows.Scan(&id, &t, &body); err != nil {
			return nil, fmt.Errorf("list changes: %w", err)
		}
		if len(resp.Changes) == size {
			resp.NextPageToken = store.EncodeToken(last)
			break
		}
		last = store.TimeCursor{TimeNS: t, ID: id}
		c := &nodewardv1.Change{}
		if err := proto.Unmarshal(body, c); err != nil {
			return nil, fmt.Errorf("decode change: %w", err)
		}
		resp.Changes = append(resp.Changes, c)
	}
	return resp, rows.Err()
}

// QueryEvents implements store.Store.
func (s *Store) QueryEvents(ctx context.Context, req *nodewardv1.QueryEventsRequest) (*nodewardv1.QueryEventsResponse, error) {
	return store.SearchEvents(ctx, req, s.fetchEvents)
}

func (s *Store) fetchEvents(ctx context.Context, q *store.EventQuery) ([]store.EventRow, error) {
	w := &where{}
	w.add("(time_ns, id) < (?, ?)", q.Before.TimeNS, q.Before.ID)
	if q.StartNS > -1<<63 {
		w.add("time_ns >= ?", q.StartNS)
	}
	if q.EndNS < 1<<63-1 {
		w.add("time_ns < ?", q.EndNS)
	}
	w.in("node", anys(q.Nodes))
	w.in("kind", anys(q.Kinds))
	if q.Binary != "" {
		w.add("bin = ?", q.Binary)
	}
	w.in("usr", anys(q.Users))
	w.in("uid", anys(q.UIDs))
	w.in("pod", anys(q.Pods))
	w.in("pod_ns", anys(q.Namespaces))
	w.in("container", anys(q.Containers))
	w.in("session", anys(q.Sessions))
	rows, err := s.reader.QueryContext(ctx, s.q(`SELECT time_ns, id, body FROM events`+w.sql()+` ORDER BY time_ns DESC, id DESC LIMIT ?`), append(w.args, q.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("query events: %w", err)
	}
	defer rows.Close()
	var out []store.EventRow
	for rows.Next() {
		var r store.EventRow
		if err := rows.Scan(&r.TimeNS, &r.ID, &r.Body); err != nil {
			return nil, fmt.Errorf("query events: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// EventsOf reads the events one batch stored, in order (replicas fetch
// what another replica committed).
func (s *Store) EventsOf(ctx context.Context, node string, seq uint64) ([]*nodewardv1.Event, error) {
	rows, err := s.reader.QueryContext(ctx, s.q(`SELECT body FROM events WHERE node = ? AND seq = ? ORDER BY idx`), node, int64(seq))
	if err != nil {
		return nil, fmt.Errorf("events of %s/%d: %w", node, seq, err)
	}
	defer rows.Close()
	var out []*nodewardv1.Event
	for rows.Next() {
		var body []byte
		if err := rows.Scan(&body); err != nil {
			return nil, err
		}
		ev := &nodewardv1.Event{}
		if err := proto.Unmarshal(body, ev); err != nil {
			return nil, fmt.Errorf("decode event: %w", err)
		}
		out = append(out, ev)
	}
	return out, rows.Err()
}

// Prune implements store.Store.
func (s *Store) Prune(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	c := cutoff.UnixNano()
	total := 0
	for _, del := range []struct{ table, query string }{
		{"events", `DELETE FROM events WHERE id IN (SELECT id FROM events WHERE time_ns < ? ORDER BY time_ns LIMIT ?)`},
		{"changes", `DELETE FROM changes WHERE id IN (SELECT id FROM changes WHERE time_ns < ? ORDER BY time_ns LIMIT ?)`},
		// A node's latest snapshot stays whatever its age.
		{"snapshots", `DELETE FROM snapshots WHERE (node, seq) IN (SELECT s.node, s.seq FROM snapshots s JOIN nodes n ON n.name = s.node
			WHERE s.received_ns < ? AND s.seq <> COALESCE(n.snapshot_seq, 0) LIMIT ?)`},
		{"sequences", `DELETE FROM sequences WHERE (node, seq) IN (SELECT node, seq FROM sequences WHERE received_ns < ? LIMIT ?)`},
	} {
		if total >= limit {
			break
		}
		res, err := s.writer.ExecContext(ctx, s.q(del.query), c, limit-total)
		if err != nil {
			return total, fmt.Errorf("prune %s: %w", del.table, err)
		}
		n, _ := res.RowsAffected()
		total += int(n)
	}
	return total, nil
}
