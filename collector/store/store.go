// Package store is the collector's persistence: the Store interface both
// backends (sqlite, postgres) implement, and what they share: group commit,
// snapshot diffing, posture scoring, page tokens and the event search loop.
package store

import (
	"context"
	"errors"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// ErrNotFound is returned when the asked-for object does not exist.
var ErrNotFound = errors.New("not found")

// ErrBadRequest wraps errors in what the caller asked (a bad page token or
// regex); the query API turns it into InvalidArgument.
var ErrBadRequest = errors.New("bad request")

// Store is the collector's persistence. Every Commit is atomic and
// idempotent per (node, sequence): a sequence already stored reports
// duplicate and changes nothing. Commits return only once durable.
type Store interface {
	// CommitSnapshot stores a node's snapshot under its sequence number and,
	// when it is the newest, makes it the node's latest: packages, ports and
	// findings are replaced and their changes recorded.
	CommitSnapshot(ctx context.Context, node string, seq uint64, snap *nodewardv1.Snapshot, received time.Time) (duplicate bool, err error)
	// CommitEvents stores a batch of events under its sequence number,
	// given decoded (events, wire nil) or encoded (wire, events nil: ingest
	// keeps what arrived and never decodes it).
	CommitEvents(ctx context.Context, node string, seq uint64, events []*nodewardv1.Event, wire [][]byte, received time.Time) (duplicate bool, err error)
	// LastSequence is the highest sequence stored for node, 0 if none.
	LastSequence(ctx context.Context, node string) (uint64, error)
	// TouchNode records that node was heard from and whether its stream is open.
	TouchNode(ctx context.Context, node string, seen time.Time, connected bool) error
	// ListNodes returns nodes ordered by name, after the page token.
	ListNodes(ctx context.Context, pageSize int, pageToken string) (nodes []*nodewardv1.Node, next string, err error)
	// GetNode returns one node and its latest snapshot (nil if none yet).
	GetNode(ctx context.Context, name string) (*nodewardv1.Node, *nodewardv1.Snapshot, error)
	// ListFindings returns the latest findings, ordered by node and check.
	ListFindings(ctx context.Context, req *nodewardv1.ListFindingsRequest) (*nodewardv1.ListFindingsResponse, error)
	// ListPackages returns installed packages by name or node, ordered by
	// node; the version filter follows each package's manager.
	ListPackages(ctx context.Context, req *nodewardv1.ListPackagesRequest) (*nodewardv1.ListPackagesResponse, error)
	// ListPorts returns listening ports, ordered by node.
	ListPorts(ctx context.Context, req *nodewardv1.ListPortsRequest) (*nodewardv1.ListPortsResponse, error)
	// ListChanges returns package, port and finding changes, newest first.
	ListChanges(ctx context.Context, req *nodewardv1.ListChangesRequest) (*nodewardv1.ListChangesResponse, error)
	// QueryEvents searches stored events, newest first.
	QueryEvents(ctx context.Context, req *nodewardv1.QueryEventsRequest) (*nodewardv1.QueryEventsResponse, error)
	// Prune deletes at most limit rows of events, snapshot history (never a
	// node's latest), changes and sequence records received before cutoff,
	// and says how many it deleted.
	Prune(ctx context.Context, cutoff time.Time, limit int) (int, error)
	Close() error
}

// Committed is one batch as the live tail sees it: a node's sequence and,
// for an event batch, its events (none for a snapshot), decoded or encoded.
// Ingest publishes its own, encoded, before they commit; Follow delivers
// other replicas', decoded, once committed.
type Committed struct {
	Node   string
	Seq    uint64
	Events []*nodewardv1.Event
	Wire   [][]byte // each event's encoding, when Events is nil
}

// Follower is implemented by stores that several collector replicas share:
// Follow calls fn, in commit order, for every commit other replicas make,
// until ctx ends.
type Follower interface {
	Follow(ctx context.Context, fn func(Committed)) error
}

// StaleAfter is how long after its last message a node counts as
// disconnected even if a replica that died never recorded the disconnect.
// Agents heartbeat every 30 seconds by default.
const StaleAfter = 3 * time.Minute
