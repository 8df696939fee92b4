// Package store defines what the collector keeps and how it is asked for it.
// Implementations live in sqlite/ (embedded default) and, later, postgres/;
// they share one conformance suite.
package store

import (
	"context"
	"errors"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// ErrNotFound is returned when the asked-for object does not exist.
var ErrNotFound = errors.New("not found")

// Store is the collector's persistence. Every Commit is atomic and
// idempotent per (node, sequence): a sequence already stored reports
// duplicate and changes nothing.
type Store interface {
	// CommitSnapshot stores a node's snapshot under its sequence number and
	// makes it the node's latest.
	CommitSnapshot(ctx context.Context, node string, seq uint64, snap *nodewardv1.Snapshot, received time.Time) (duplicate bool, err error)
	// CommitEvents stores a batch of events under its sequence number.
	CommitEvents(ctx context.Context, node string, seq uint64, events []*nodewardv1.Event, received time.Time) (duplicate bool, err error)
	// LastSequence is the highest sequence stored for node, 0 if none.
	LastSequence(ctx context.Context, node string) (uint64, error)
	// TouchNode records that node was heard from and whether its stream is open.
	TouchNode(ctx context.Context, node string, seen time.Time, connected bool) error
	// ListNodes returns nodes ordered by name, after the page token.
	ListNodes(ctx context.Context, pageSize int, pageToken string) (nodes []*nodewardv1.Node, next string, err error)
	// GetNode returns one node and its latest snapshot (nil if none yet).
	GetNode(ctx context.Context, name string) (*nodewardv1.Node, *nodewardv1.Snapshot, error)
	Close() error
}
